package store

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// timeLayout is how times are stored: RFC 3339, UTC, always nine
// fractional digits, so that comparing the text compares the times.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// encodeTime formats t for storage.
func encodeTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// nullTime formats t for a nullable column: the zero time is NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return encodeTime(t)
}

// timeScan scans a stored time (or NULL, as the zero time) into *t.
type timeScan struct{ t *time.Time }

func (s timeScan) Scan(src any) error {
	var text string
	switch v := src.(type) {
	case nil:
		*s.t = time.Time{}
		return nil
	case string:
		text = v
	case []byte:
		text = string(v)
	default:
		return fmt.Errorf("scan time: unexpected %T", src)
	}
	t, err := time.Parse(timeLayout, text)
	if err != nil {
		return fmt.Errorf("scan time: %w", err)
	}
	*s.t = t
	return nil
}

// nullString stores "" as NULL (optional foreign keys, optional JSON).
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// stringScan scans a nullable text column into *s, NULL as "".
type stringScan struct{ s *string }

func (d stringScan) Scan(src any) error {
	var ns sql.NullString
	if err := ns.Scan(src); err != nil {
		return err
	}
	*d.s = ns.String
	return nil
}

// rawScan scans a nullable JSON column into *m, NULL as nil.
type rawScan struct{ m *json.RawMessage }

func (d rawScan) Scan(src any) error {
	var ns sql.NullString
	if err := ns.Scan(src); err != nil {
		return err
	}
	if !ns.Valid || ns.String == "" {
		*d.m = nil
		return nil
	}
	*d.m = json.RawMessage(ns.String)
	return nil
}

// nullJSON stores an empty raw message as NULL.
func nullJSON(m json.RawMessage) any {
	if len(m) == 0 {
		return nil
	}
	return string(m)
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

// jsonScan scans a JSON text column into the value v points to.
type jsonScan struct{ v any }

func (d jsonScan) Scan(src any) error {
	var text string
	switch s := src.(type) {
	case string:
		text = s
	case []byte:
		text = string(s)
	default:
		return fmt.Errorf("scan json: unexpected %T", src)
	}
	if err := json.Unmarshal([]byte(text), d.v); err != nil {
		return fmt.Errorf("scan json: %w", err)
	}
	return nil
}
