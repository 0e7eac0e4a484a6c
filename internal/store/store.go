// Package store is banger's durable state: one SQLite database (pure Go,
// modernc.org/sqlite, CGO off) in WAL mode, holding images, kernels, VMs,
// guest IP allocations, workspaces and async operations. The schema is
// versioned; Open applies pending migrations and refuses a database newer
// than this binary.
//
// Nothing here describes transient kernel state (PIDs, TAPs, loop devices):
// that lives in each VM's handles.json, which the daemon rebuilds at start.
//
// Concurrency: a Store is safe for use by many goroutines. Reads go through
// a pool of read-only connections; every write goes through one writer
// connection, so writes from this process are serialised by database/sql
// and never race each other for SQLite's write lock (no SQLITE_BUSY under
// load). busy_timeout covers other processes (an operator's sqlite3 shell).
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// driverName is the database/sql name modernc.org/sqlite registers.
const driverName = "sqlite"

// pragmas are applied to every connection through the DSN.
//
// synchronous(FULL): in WAL mode NORMAL never corrupts the database but may
// lose the last commits on power loss. banger writes a handful of rows per
// user action (create a VM, allocate its IP, record an operation), so an
// fsync per commit costs nothing noticeable, and a commit that returned
// stays committed: the rows keep agreeing with the directories, disks and
// guest IPs the daemon made on the strength of them.
var pragmas = []string{
	"busy_timeout(10000)",
	"journal_mode(WAL)",
	"foreign_keys(1)",
	"synchronous(FULL)",
}

// Store is the handle on banger's database. Its record methods (CreateVM,
// ResolveVM, AllocateIP, ...) are shared with Tx.
type Store struct {
	queries

	path string
	rdb  *sql.DB // read-only pool: many connections, never writes
	wdb  *sql.DB // the single writer connection; also runs WithTx
}

// Tx is a write transaction opened by WithTx. It has the same record
// methods as Store; they all run inside the transaction.
type Tx struct {
	queries
}

// queryer is what *sql.DB and *sql.Tx have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queries holds the record methods. r serves reads and w writes; in a Tx
// both are the transaction.
type queries struct {
	r, w queryer
	now  func() time.Time
}

// Open opens (creating it 0600 if missing) the database at path, checks
// that WAL mode took effect, and applies pending migrations. A database
// whose schema is newer than this binary knows is refused with an error
// wrapping ErrFailedPrecondition, and is left untouched.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open database: empty path: %w", ErrInvalidArgument)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := createFile(abs); err != nil {
		return nil, err
	}
	// Check the version through a read-only connection first: the writer's
	// DSN switches the file to WAL, which must not happen to a database
	// this binary refuses.
	if err := precheckVersion(ctx, abs); err != nil {
		return nil, err
	}

	s := &Store{path: abs}
	s.wdb, err = openPool(abs, false)
	if err != nil {
		return nil, err
	}
	// One writer: database/sql queues writers instead of SQLite bouncing
	// them with SQLITE_BUSY.
	s.wdb.SetMaxOpenConns(1)
	if err := checkWriter(ctx, s.wdb); err != nil {
		s.wdb.Close()
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	if err := migrate(ctx, s.wdb, abs, time.Now); err != nil {
		s.wdb.Close()
		return nil, err
	}

	s.rdb, err = openPool(abs, true)
	if err != nil {
		s.wdb.Close()
		return nil, err
	}
	// WAL readers do not block each other or the writer; a few per CPU
	// is plenty for a daemon whose tables hold tens of rows.
	s.rdb.SetMaxOpenConns(max(4, 2*runtime.GOMAXPROCS(0)))
	if err := s.rdb.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	s.queries = queries{r: s.rdb, w: s.wdb, now: time.Now}
	return s, nil
}

// Close closes every connection. The last one out checkpoints the WAL.
func (s *Store) Close() error {
	var errs []error
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	return errors.Join(errs...)
}

// Path is the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// SchemaVersion is the highest migration applied to the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	return schemaVersion(ctx, s.rdb)
}

// WithTx runs fn in one write transaction: it commits if fn returns nil
// and rolls back otherwise (or if fn panics). The transaction holds the
// write lock from its first statement, so a read-modify-write inside it is
// atomic. fn must use tx, never s: the writer connection is busy with the
// transaction, so a write through s would wait for it until ctx ends, and
// a read through s would not see the transaction's changes.
func (s *Store) WithTx(ctx context.Context, fn func(tx *Tx) error) error {
	sqlTx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			sqlTx.Rollback()
			panic(p)
		}
	}()
	if err := fn(&Tx{queries{r: sqlTx, w: sqlTx, now: s.now}}); err != nil {
		return errors.Join(err, rollback(sqlTx))
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// NewID returns a fresh random record ID: 16 lowercase hex digits.
func NewID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}

// createFile makes the database file 0600 if it does not exist yet, so
// SQLite (which copies the main file's mode onto -wal and -shm) never
// creates it with the umask's idea of permissions. An existing file is not
// modified.
func createFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	return f.Close()
}

// dsn is the modernc.org/sqlite DSN for path. The file: URI form escapes
// any odd characters in the path and passes mode=ro through to SQLite.
func dsn(path string, extra url.Values) string {
	q := url.Values{}
	for k, vs := range extra {
		q[k] = vs
	}
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	return u.String()
}

// openPool opens a connection pool on path with the standard pragmas;
// readOnly pools also refuse writes (query_only), so a stray write fails
// loudly instead of bypassing the single writer.
func openPool(path string, readOnly bool) (*sql.DB, error) {
	q := url.Values{"_pragma": slices.Clone(pragmas)}
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		// BEGIN IMMEDIATE: a transaction takes the write lock up front,
		// so it waits (busy_timeout) rather than failing to upgrade a
		// read lock when another process writes.
		q.Set("_txlock", "immediate")
	}
	db, err := sql.Open(driverName, dsn(path, q))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return db, nil
}

// checkWriter verifies that the DSN pragmas took effect on the writer.
func checkWriter(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read journal_mode: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, want \"wal\" (does the filesystem support shared memory?): %w", mode, ErrUnavailable)
	}
	var fk int
	if err := db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return fmt.Errorf("read foreign_keys: %w", err)
	}
	if fk != 1 {
		return fmt.Errorf("foreign_keys is %d, want 1: %w", fk, ErrUnavailable)
	}
	return nil
}
