package replica

import (
	"testing"
)

func TestSmoke(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		a := open(t, url, Options{})
		apply(t, a, txn(1, ins("public.t", []string{"id"}, row("id", 1, "v", "a"))), txn(2, ins("s.u", []string{"id"}, row("id", 1, "v", "b"))))
		apply(t, a, txn(2), txn(3, upd("public.t", row("id", 1), row("id", 2, "v", "c"))))
		t.Logf("%v %+v", dump(t, url), a.Stats())
	})
}
