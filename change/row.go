package change

// Column is one named value of a Row.
type Column struct {
	Name  string
	Value Value
}

// Row is a row image: columns in their source (or input) order. A nil Row
// is absent (no image); a non-nil Row of length 0 is present but has no
// columns (a Postgres table may have none). Column names must be unique
// and non-empty (Validate checks).
type Row []Column

// Index returns the position of the column named name, or -1.
func (r Row) Index(name string) int {
	for i := range r {
		if r[i].Name == name {
			return i
		}
	}
	return -1
}

// Get returns the value of the column named name; ok is false if there is
// no such column.
func (r Row) Get(name string) (v Value, ok bool) {
	if i := r.Index(name); i >= 0 {
		return r[i].Value, true
	}
	return Value{}, false
}

// Equal reports whether r and o are both absent, or both present with the
// same columns, in the same order, with Equal values.
func (r Row) Equal(o Row) bool {
	if (r == nil) != (o == nil) || len(r) != len(o) {
		return false
	}
	for i := range r {
		if r[i].Name != o[i].Name || !r[i].Value.Equal(o[i].Value) {
			return false
		}
	}
	return true
}

// MarshalJSON returns the output JSON form of r: null when absent, else an
// object with the columns in order (values as in Value.AppendJSON).
func (r Row) MarshalJSON() ([]byte, error) { return appendRowJSON(nil, r), nil }

// UnmarshalJSON sets *r from a JSON object (keeping key order; duplicate
// names are an error) or null (absent). Values use the input mapping of
// ParseValue.
func (r *Row) UnmarshalJSON(data []byte) error {
	p, err := newParser(data)
	if err != nil {
		return err
	}
	row, err := p.row()
	if err == nil {
		err = p.end()
	}
	if err == nil {
		err = validateRow(row, nil, "")
	}
	if err != nil {
		return err
	}
	*r = row
	return nil
}

// ColumnType gives the source type name of a column, e.g. {"id", "int8"}.
type ColumnType struct {
	Name string
	Type string
}
