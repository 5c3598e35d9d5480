// Package kafkawire is what both ends of a walship topic share: the
// record format, compatible with Debezium's PostgreSQL connector (JSON
// converter, schemas.enable=false, or with FormatJSONSchemas true), its
// decoding (of either), the assembly of whole
// transactions from records, topic names, and the settings of a Kafka
// client (brokers, TLS, SASL) with the one classifier of errors retrying
// cannot cure. The producer (package kafkasink) encodes with it and the
// consumer (package consumer) decodes with it; the consumer links no
// producer code.
//
// # Guarantees
//
//   - Round trip: for every transaction t and every change i of it,
//     Decode of a record built by Encoder (AppendKey, AppendValue) gives
//     back the change Equal to t.Changes[i], with its LSN, commit LSN,
//     first LSN and lineage from the record headers (HeaderLSN,
//     HeaderCommitLSN, HeaderTxnFirstLSN, HeaderLineage); the Assembler
//     gives back the transaction's whole header, its idempotency mark and
//     in-request flag included (HeaderIdempotency, HeaderInRequest, on its
//     first record only).
//   - Schemas: in FormatJSONSchemas every key and value schema describes
//     its payload exactly (each field present or optional, of its type).
//   - Safe decoding: Decode never panics on any input; every malformed
//     record is an error wrapping ErrMalformed that says what is wrong.
//   - Whole transactions, once: Assembler returns a transaction only when
//     all its changes have arrived, drops records at or below what was
//     already returned (redelivery), and reports a gap in the ordered
//     stream as ErrGap rather than skipping it. An aborted-range marker
//     (HeaderAborted) accounts for the LSNs of a transaction the log
//     aborted midway: the Assembler returns it as a range with nothing to
//     apply (change.Committed.Aborted), never as a gap.
//
// docs/KAFKA.md describes the envelope, the value encoding and where
// walship differs from Debezium.
package kafkawire
