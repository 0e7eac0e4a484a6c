package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// table describes a table of named records (vms, images, kernels) for the
// lookups they share.
type table[T any] struct {
	kind string // "vm", "image", "kernel": the noun in messages
	name string // SQL table name
	cols string // select list, in scan's order
	scan func(rowScanner) (T, error)
	key  func(T) (id, name string)
}

// get returns the record whose column col equals val.
func (t table[T]) get(ctx context.Context, q queryer, col, val string) (T, error) {
	rec, err := t.scan(q.QueryRowContext(ctx,
		`SELECT `+t.cols+` FROM `+t.name+` WHERE `+col+` = ?`, val))
	if errors.Is(err, sql.ErrNoRows) {
		return rec, fmt.Errorf("%s %q: %w", t.kind, val, ErrNotFound)
	}
	if err != nil {
		return rec, fmt.Errorf("get %s %q: %w", t.kind, val, err)
	}
	return rec, nil
}

// list returns the records matching where (SQL, may be empty), oldest first.
func (t table[T]) list(ctx context.Context, q queryer, where string, args ...any) ([]T, error) {
	query := `SELECT ` + t.cols + ` FROM ` + t.name
	if where != "" {
		query += ` WHERE ` + where
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list %ss: %w", t.kind, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		rec, err := t.scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list %ss: %w", t.kind, err)
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %ss: %w", t.kind, err)
	}
	return out, nil
}

// resolve finds the record a user means by ref: the one named ref, else the
// one whose ID is ref, else the only one whose ID starts with ref. Several
// IDs with that prefix is ErrInvalidArgument, listing their names.
func (t table[T]) resolve(ctx context.Context, q queryer, ref string) (T, error) {
	var zero T
	if ref == "" {
		return zero, fmt.Errorf("%s: empty name or id: %w", t.kind, ErrInvalidArgument)
	}
	// One query, so all three rules see the same snapshot. Exact matches
	// sort first; a name cannot match two rows and neither can an id.
	// The prefix test is a range, so every term can use an index:
	// id starts with ref iff ref <= id < ref+U+10FFFF (the largest code
	// point, which no id contains).
	rows, err := q.QueryContext(ctx, `
		SELECT `+t.cols+` FROM `+t.name+`
		WHERE name = ?1 OR id = ?1 OR (id >= ?1 AND id < ?1 || char(1114111))
		ORDER BY CASE WHEN name = ?1 THEN 0 WHEN id = ?1 THEN 1 ELSE 2 END, name`, ref)
	if err != nil {
		return zero, fmt.Errorf("resolve %s %q: %w", t.kind, ref, err)
	}
	defer rows.Close()
	var matches []T
	exact := false
	for rows.Next() {
		rec, err := t.scan(rows)
		if err != nil {
			return zero, fmt.Errorf("resolve %s %q: %w", t.kind, ref, err)
		}
		if id, name := t.key(rec); len(matches) == 0 && (name == ref || id == ref) {
			exact = true
		}
		matches = append(matches, rec)
	}
	if err := rows.Err(); err != nil {
		return zero, fmt.Errorf("resolve %s %q: %w", t.kind, ref, err)
	}
	switch {
	case len(matches) == 0:
		return zero, fmt.Errorf("%s %q: %w", t.kind, ref, ErrNotFound)
	case len(matches) == 1 || exact:
		return matches[0], nil
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		_, name := t.key(m)
		names[i] = strconv.Quote(name)
	}
	return zero, errorf(ErrInvalidArgument,
		"%s id prefix %q is ambiguous: it matches %s %s; give more of the id, or the name",
		t.kind, ref, plural(t.kind, len(names)), strings.Join(names, ", "))
}

// plural is "vm" or "vms".
func plural(noun string, n int) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

// mustAffect turns an UPDATE or DELETE that matched no row into
// ErrNotFound for the kind of record and its id.
func mustAffect(res sql.Result, kind, id string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s %q: %w", kind, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s %q: %w", kind, id, ErrNotFound)
	}
	return nil
}
