package config

import "time"

// Checksum configures in-stream consistency checks (package checksum,
// docs/CHECKSUM.md); it needs source.postgres. nil: no checks.
type Checksum struct {
	// ChunkRows is the rows hashed per chunk; default 1000.
	ChunkRows int `yaml:"chunk_rows"`
	// Rate bounds the chunks checked a second; default 20.
	Rate float64 `yaml:"rate"`
	// Schedule starts a round that long after the previous one ended; 0
	// (default): rounds start on demand (walship checksum start).
	Schedule time.Duration `yaml:"schedule"`
}

func (c *Config) validateChecksum(v *validator) {
	k := c.Checksum
	if k == nil {
		return
	}
	if c.Source.Postgres == nil {
		v.fail("checksum", "needs source.postgres: checks are rounds over a PostgreSQL source's tables")
	}
	if k.ChunkRows < 0 {
		v.fail("checksum.chunk_rows", "must not be negative")
	}
	if k.ChunkRows == 0 {
		k.ChunkRows = 1000
	}
	if k.Rate < 0 {
		v.fail("checksum.rate", "must not be negative")
	}
	if k.Rate == 0 {
		k.Rate = 20
	}
	v.nonNegative("checksum.schedule", k.Schedule)
}
