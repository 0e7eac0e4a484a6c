package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// migration is one step of the schema. Versions start at 1 and rise by one;
// a released migration is never edited, only followed by a new one.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations is the schema's history, oldest first.
//
// Every table is STRICT (column types enforced) and every enumerated column
// has a CHECK, so a bad value fails at the statement that writes it.
// Times are fixed-width RFC 3339 UTC text with nanoseconds (see timeLayout)
// so that text order is time order. JSON columns are checked with
// json_valid. Changing a CHECK or a foreign key later means rebuilding the
// table (SQLite has no ALTER for them): do that with foreign_keys off,
// which cannot be toggled inside a transaction, so such a migration needs
// its own runner.
var migrations = []migration{
	{version: 1, name: "initial schema", sql: schemaV1},
}

const schemaV1 = `
-- Guest kernels: an uncompressed vmlinux and optionally an initrd under
-- kernels/ID/. Immutable once imported.
CREATE TABLE kernels (
	id         TEXT PRIMARY KEY CHECK (id <> ''),
	name       TEXT NOT NULL UNIQUE CHECK (name <> ''),
	version    TEXT NOT NULL DEFAULT '',
	source     TEXT NOT NULL DEFAULT '', -- file path or bundle URL it came from
	has_initrd INTEGER NOT NULL DEFAULT 0 CHECK (has_initrd IN (0, 1)),
	is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)), -- the kernel VMs boot when neither VM nor image names one
	created_at TEXT NOT NULL
) STRICT;

CREATE UNIQUE INDEX kernels_one_default ON kernels (is_default) WHERE is_default = 1;

-- Images: a read-only rootfs.ext4 under images/ID/. A pull or import
-- records the row as pending first and flips it to ready or failed.
CREATE TABLE images (
	id                TEXT PRIMARY KEY CHECK (id <> ''),
	name              TEXT NOT NULL UNIQUE CHECK (name <> ''),
	state             TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'failed')),
	state_reason      TEXT NOT NULL DEFAULT '',
	source_kind       TEXT NOT NULL CHECK (source_kind IN ('pull', 'import', 'register', 'promote')),
	source_ref        TEXT NOT NULL DEFAULT '', -- pull ref, file path, or promoted VM id
	manifest_digest   TEXT NOT NULL DEFAULT '',
	size_bytes        INTEGER NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
	config_json       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config_json)),
	default_kernel_id TEXT REFERENCES kernels (id) ON DELETE RESTRICT,
	parent_image_id   TEXT REFERENCES images (id) ON DELETE SET NULL, -- provenance only
	created_at        TEXT NOT NULL,
	updated_at        TEXT NOT NULL
) STRICT;
CREATE INDEX images_default_kernel_id ON images (default_kernel_id);
CREATE INDEX images_parent_image_id ON images (parent_image_id);

-- VMs: durable intent and configuration only. PIDs, TAPs, loop devices and
-- dm targets live in vms/ID/handles.json, never here.
CREATE TABLE vms (
	id            TEXT PRIMARY KEY CHECK (id <> ''),
	name          TEXT NOT NULL UNIQUE CHECK (name <> ''),
	image_id      TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
	kernel_id     TEXT REFERENCES kernels (id) ON DELETE RESTRICT, -- NULL: the image's default
	state         TEXT NOT NULL CHECK (state IN ('created', 'starting', 'running', 'stopping', 'stopped', 'error')),
	state_reason  TEXT NOT NULL DEFAULT '',
	vcpus         INTEGER NOT NULL CHECK (vcpus > 0),
	memory_mib    INTEGER NOT NULL CHECK (memory_mib > 0),
	disk_bytes    INTEGER NOT NULL CHECK (disk_bytes >= 0),
	vmm           TEXT NOT NULL CHECK (vmm IN ('firecracker', 'qemu')),
	disk_strategy TEXT NOT NULL DEFAULT '', -- free text: the daemon names the strategies
	mac           TEXT NOT NULL DEFAULT '',
	options_json  TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(options_json) AND json_type(options_json) = 'object'),
	created_at    TEXT NOT NULL,
	updated_at    TEXT NOT NULL,
	started_at    TEXT
) STRICT;
CREATE INDEX vms_image_id ON vms (image_id);
CREATE INDEX vms_kernel_id ON vms (kernel_id);
CREATE UNIQUE INDEX vms_mac ON vms (mac) WHERE mac <> '';

-- Guest IPs on the bridge: one per VM, one VM per IP.
CREATE TABLE ip_allocations (
	ip           TEXT PRIMARY KEY CHECK (ip <> ''),
	vm_id        TEXT NOT NULL UNIQUE REFERENCES vms (id) ON DELETE CASCADE,
	allocated_at TEXT NOT NULL
) STRICT;

-- The checkout a VM's workspace was prepared from.
CREATE TABLE workspaces (
	vm_id         TEXT PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
	host_path     TEXT NOT NULL CHECK (host_path <> ''),
	guest_dest    TEXT NOT NULL CHECK (guest_dest <> ''),
	base_commit   TEXT NOT NULL DEFAULT '',
	branch        TEXT NOT NULL DEFAULT '',
	manifest_json TEXT CHECK (manifest_json IS NULL OR json_valid(manifest_json)),
	prepared_at   TEXT NOT NULL
) STRICT;

-- Async operations. Persisted so that one cut short by a daemon crash is
-- marked interrupted at the next start and can still be reported.
CREATE TABLE operations (
	id          TEXT PRIMARY KEY CHECK (id <> ''),
	kind        TEXT NOT NULL CHECK (kind <> ''),
	target      TEXT NOT NULL DEFAULT '',
	state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'canceled', 'interrupted')),
	phase       TEXT NOT NULL DEFAULT '',
	error       TEXT NOT NULL DEFAULT '',
	result_json TEXT CHECK (result_json IS NULL OR json_valid(result_json)),
	created_at  TEXT NOT NULL,
	updated_at  TEXT NOT NULL,
	finished_at TEXT,
	CHECK ((state = 'running') = (finished_at IS NULL))
) STRICT;
CREATE INDEX operations_state ON operations (state);
CREATE INDEX operations_finished_at ON operations (finished_at);
`

const createMigrationsTable = `
CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_at TEXT NOT NULL
) STRICT`

// latestVersion is the newest schema this binary knows.
func latestVersion() int { return migrations[len(migrations)-1].version }

// newerSchemaError is what Open returns for a database from a newer banger.
func newerSchemaError(path string, have int) error {
	return errorf(ErrFailedPrecondition,
		"database %s has schema version %d but this banger knows only up to %d: upgrade banger (or restore a backup)",
		filepath.Base(path), have, latestVersion())
}

// precheckVersion refuses a database newer than this binary before anything
// writes to it. It reads through a read-only connection, which neither
// changes the journal mode nor checkpoints on close. (If a crashed daemon
// left a WAL, that connection may add a -shm beside it; the database file
// itself is never written.)
func precheckVersion(ctx context.Context, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	if fi.Size() == 0 {
		return nil // brand new: nothing to check, nothing to protect
	}
	q := url.Values{"mode": {"ro"}, "_pragma": {"busy_timeout(10000)"}}
	if _, err := os.Lstat(path + "-wal"); errors.Is(err, fs.ErrNotExist) {
		// No WAL, so the file alone is the whole database: read it as
		// immutable, which creates no -wal or -shm beside it. (A read-only
		// connection to a WAL database would create both and, being read
		// only, leave them behind.)
		q.Set("immutable", "1")
	}
	db, err := sql.Open(driverName, dsn(path, q))
	if err != nil {
		return fmt.Errorf("open database %s: %w", path, err)
	}
	defer db.Close()
	have, err := schemaVersion(ctx, db)
	if err != nil {
		return fmt.Errorf("read schema version of %s: %w", path, err)
	}
	if have > latestVersion() {
		return newerSchemaError(path, have)
	}
	return nil
}

// schemaVersion is the highest applied migration, 0 for an empty database.
func schemaVersion(ctx context.Context, q queryer) (int, error) {
	var n int
	err := q.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n)
	if err != nil || n == 0 {
		return 0, err
	}
	var v int
	err = q.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// migrate applies every pending migration, each in its own transaction.
func migrate(ctx context.Context, db *sql.DB, path string, now func() time.Time) error {
	if _, err := db.ExecContext(ctx, createMigrationsTable); err != nil {
		return fmt.Errorf("migrate %s: %w", path, err)
	}
	for _, m := range migrations {
		if err := applyMigration(ctx, db, path, m, now); err != nil {
			return err
		}
	}
	return nil
}

// applyMigration applies m unless the database already has it. The version
// is re-read inside the transaction, which holds the write lock, so two
// processes opening the same file cannot both apply m.
func applyMigration(ctx context.Context, db *sql.DB, path string, m migration, now func() time.Time) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate %s to version %d: %w", path, m.version, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, rollback(tx))
		}
	}()
	have, err := schemaVersion(ctx, tx)
	if err != nil {
		return fmt.Errorf("read schema version of %s: %w", path, err)
	}
	if have > latestVersion() {
		return newerSchemaError(path, have)
	}
	if have >= m.version {
		return tx.Rollback()
	}
	if have != m.version-1 {
		return fmt.Errorf("migrate %s: at version %d, cannot apply %d (%s)", path, have, m.version, m.name)
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migrate %s to version %d (%s): %w", path, m.version, m.name, err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, encodeTime(now())); err != nil {
		return fmt.Errorf("record migration %d: %w", m.version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate %s to version %d: commit: %w", path, m.version, err)
	}
	return nil
}

// rollback rolls tx back, ignoring the error of a transaction that is
// already done.
func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("roll back: %w", err)
	}
	return nil
}
