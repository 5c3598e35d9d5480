package bytesize

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false}, {"4096", 4096, false}, {"64MiB", 64 << 20, false}, {"64M", 64 << 20, false},
		{"1GiB", 1 << 30, false}, {"10MB", 10_000_000, false}, {"12 KiB", 12 << 10, false},
		{"", 0, true}, {"-1", 0, true}, {"1.5GiB", 0, true}, {"64XB", 0, true}, {"99999999999TiB", 0, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, err %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	if got := Format(64 << 20); got != "64MiB" {
		t.Errorf("Format = %q", got)
	}
}
