package kafkawire

import (
	"strconv"

	"github.com/walship/walship/change"
)

// Transaction metadata events, as Debezium's provide.transaction.metadata
// writes them: a BEGIN and an END event per source transaction on
// "<prefix>.transaction", keyed {"id":...} with the id of the envelopes'
// transaction.id.
//
//	{"status":"BEGIN","id":"571:53195829","event_count":null,"data_collections":null,"ts_ms":1486500577125}
//	{"status":"END","id":"571:53195829","event_count":2,
//	 "data_collections":[{"data_collection":"s1.a","event_count":1},{"data_collection":"s2.a","event_count":1}],"ts_ms":1486500577691}
//
// event_count counts the transaction's row changes (messages left out),
// data_collections them per table in order of first change; ts_ms is the
// source commit time (the log's commit time without one).

// TransactionTopic is the topic of transaction metadata events.
func TransactionTopic(prefix string) string { return prefix + ".transaction" }

// AppendTxnKey appends the key of t's metadata events: {"id":"..."}.
func AppendTxnKey(dst []byte, t *change.Committed) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendTxnID(dst, t)
	return append(dst, '}')
}

// AppendTxnBegin appends the value of t's BEGIN event.
func AppendTxnBegin(dst []byte, t *change.Committed) []byte {
	dst = append(dst, `{"status":"BEGIN","id":`...)
	dst = appendTxnID(dst, t)
	dst = append(dst, `,"event_count":null,"data_collections":null,"ts_ms":`...)
	dst = strconv.AppendInt(dst, txnTime(t), 10)
	return append(dst, '}')
}

// AppendTxnEnd appends the value of t's END event.
func AppendTxnEnd(dst []byte, t *change.Committed) []byte {
	type count struct {
		table change.Table
		n     int
	}
	var counts []count
	var index map[change.Table]int // for a transaction of many tables
	total := 0
	for i := range t.Changes {
		c := &t.Changes[i]
		if c.Op == change.Message || c.Table.IsZero() {
			continue
		}
		total++
		k := -1
		if index != nil {
			if j, ok := index[c.Table]; ok {
				k = j
			}
		} else {
			for j := range counts {
				if counts[j].table == c.Table {
					k = j
					break
				}
			}
		}
		if k < 0 {
			k = len(counts)
			counts = append(counts, count{table: c.Table})
			if index == nil && len(counts) > 16 {
				index = map[change.Table]int{}
				for j, ct := range counts {
					index[ct.table] = j
				}
			} else if index != nil {
				index[c.Table] = k
			}
		}
		counts[k].n++
	}
	dst = append(dst, `{"status":"END","id":`...)
	dst = appendTxnID(dst, t)
	dst = append(dst, `,"event_count":`...)
	dst = strconv.AppendInt(dst, int64(total), 10)
	dst = append(dst, `,"data_collections":[`...)
	for i, ct := range counts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"data_collection":`...)
		dst = appendString(dst, ct.table.Schema+"."+ct.table.Name)
		dst = append(dst, `,"event_count":`...)
		dst = strconv.AppendInt(dst, int64(ct.n), 10)
		dst = append(dst, '}')
	}
	dst = append(dst, `],"ts_ms":`...)
	dst = strconv.AppendInt(dst, txnTime(t), 10)
	return append(dst, '}')
}

// txnTime is the source commit time of t in Unix milliseconds, else the
// log's.
func txnTime(t *change.Committed) int64 {
	if !t.Header.SourceCommitTime.IsZero() {
		return t.Header.SourceCommitTime.UnixMilli()
	}
	return t.CommitTime.UnixMilli()
}
