package store

import (
	"errors"
	"fmt"
	"strings"

	"banger/internal/errdefs"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The sentinels callers test with errors.Is; they are errdefs' own values,
// re-exported so callers of store need not import errdefs too.
var (
	ErrNotFound           = errdefs.ErrNotFound
	ErrAlreadyExists      = errdefs.ErrAlreadyExists
	ErrInvalidArgument    = errdefs.ErrInvalidArgument
	ErrBusy               = errdefs.ErrBusy
	ErrFailedPrecondition = errdefs.ErrFailedPrecondition
	ErrUnavailable        = errdefs.ErrUnavailable
	ErrCanceled           = errdefs.ErrCanceled
)

// kindError carries a message that reads well on its own while still
// matching a sentinel with errors.Is.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// errorf formats a message and tags it with kind (a sentinel).
func errorf(kind error, format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// sqliteCode is the extended result code of a SQLite error, 0 otherwise.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// uniqueViolation reports whether err is a UNIQUE or PRIMARY KEY violation
// and, if so, the offending column(s) as SQLite names them ("vms.name").
func uniqueViolation(err error) (column string, ok bool) {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
	default:
		return "", false
	}
	const marker = "constraint failed: "
	msg := err.Error()
	if i := strings.LastIndex(msg, marker); i >= 0 {
		msg = msg[i+len(marker):]
	}
	if i := strings.LastIndex(msg, " ("); i >= 0 {
		msg = msg[:i]
	}
	return msg, true
}

// isForeignKeyViolation reports whether err is a FOREIGN KEY violation.
// SQLite does not say which key; callers look that up. An ON DELETE
// RESTRICT action reports itself as SQLITE_CONSTRAINT_TRIGGER with the
// foreign-key message, so that counts too.
func isForeignKeyViolation(err error) bool {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return true
	case sqlite3.SQLITE_CONSTRAINT_TRIGGER:
		return strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
	}
	return false
}

// invalidValue maps CHECK and NOT NULL violations (a value that can never
// be valid: an unknown state, an empty name, malformed JSON) to
// ErrInvalidArgument, naming what was written. Other errors pass through
// wrapped with what.
func invalidValue(what string, err error) error {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_NOTNULL, sqlite3.SQLITE_CONSTRAINT_DATATYPE:
		return fmt.Errorf("%s: %w: %s", what, ErrInvalidArgument, constraintDetail(err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// constraintDetail trims the driver's prefix off a constraint message,
// leaving e.g. "CHECK constraint failed: state IN (...)".
func constraintDetail(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "constraint failed") {
		msg = msg[i+2:]
	}
	if i := strings.LastIndex(msg, " ("); i >= 0 && strings.HasSuffix(msg, ")") {
		msg = msg[:i]
	}
	return msg
}
