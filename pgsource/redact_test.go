package pgsource

import (
	"strings"
	"testing"
)

// TestValidateNeverShowsTheDSNPassword: the driver's parse errors quote the
// connection string with a mask that misses spaces around '=', escapes,
// unterminated quotes and unencoded '@' and ':'; Validate's error names
// the key and never the password.
func TestValidateNeverShowsTheDSNPassword(t *testing.T) {
	for _, dsn := range []string{
		"host=db password = hunter2x dbname=app sslmode=bogus",
		`host=db password=a\ hunter2x dbname=app sslmode=bogus`,
		`host=db password='a\'hunter2x' dbname=app sslmode=bogus`,
		`host=db password='hunter2x dbname=app`,
		"postgres://u:p@ss:hunter2x@h/db",
		"postgres://u:hunter2x@h/db?sslmode=bogus",
	} {
		o := Options{DSN: dsn}
		err := o.Validate()
		if err == nil {
			t.Fatalf("Validate(%q) accepted it", dsn)
		}
		if msg := err.Error(); strings.Contains(msg, "hunter2x") || !strings.Contains(msg, "source.postgres.dsn: cannot parse") {
			t.Errorf("Validate(%q) = %q: want source.postgres.dsn named and the password hidden", dsn, msg)
		}
	}
}
