package ha

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fenceTxnTimeout is the transaction timeout Fence registers with the
// coordinator. No transaction runs under the epoch Fence obtains, so its
// value only has to be one every broker accepts (at most
// transaction.max.timeout.ms, 15 minutes by default).
const fenceTxnTimeout = 60 * time.Second

// Fence sends one InitProducerID request for transactionalID to its
// transaction coordinator, through a client built from client (seeds, TLS,
// SASL). The coordinator aborts any transaction still open under that id and
// bumps the producer epoch, so every producer that initialised the id
// before is fenced: its next produce, AddPartitionsToTxn or EndTxn fails
// with PRODUCER_FENCED or INVALID_PRODUCER_EPOCH, and nothing it had
// written in its open transaction ever becomes visible to read_committed
// readers.
//
// Fence blocks until the coordinator answers or ctx ends. It retries the
// coordinator's transient answers (CONCURRENT_TRANSACTIONS while it aborts
// the open transaction, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR); any
// other error is returned, naming the transactional id.
func Fence(ctx context.Context, client []kgo.Opt, transactionalID string) error {
	if transactionalID == "" {
		return errors.New("ha: fence: empty transactional id")
	}
	cl, err := kgo.NewClient(client...)
	if err != nil {
		return fmt.Errorf("ha: fence %q: client: %w", transactionalID, err)
	}
	defer cl.Close()
	backoff := 20 * time.Millisecond
	for {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = kmsg.StringPtr(transactionalID)
		req.TransactionTimeoutMillis = int32(fenceTxnTimeout / time.Millisecond)
		req.ProducerID = -1
		req.ProducerEpoch = -1
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
			if err == nil {
				return nil
			}
		}
		if !errors.Is(err, kerr.ConcurrentTransactions) && !errors.Is(err, kerr.CoordinatorLoadInProgress) &&
			!errors.Is(err, kerr.NotCoordinator) {
			return fmt.Errorf("ha: fence %q: InitProducerID: %w", transactionalID, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ha: fence %q: InitProducerID: %w (last answer: %v)", transactionalID, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}
