package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is a fake time source: each call returns a time one second later.
type clock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func newClock() *clock {
	return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// openTestStore opens a fresh store in a temp dir, closed at cleanup.
func openTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// fixtures makes the rows most tests need: a kernel, a ready image and
// helpers to add VMs.
type fixtures struct {
	t      *testing.T
	s      *Store
	kernel Kernel
	image  Image
}

func newFixtures(t *testing.T, s *Store) *fixtures {
	t.Helper()
	ctx := t.Context()
	k, err := s.CreateKernel(ctx, Kernel{Name: "6.1-cloud", Version: "6.1.0-31", Source: "/tmp/vmlinux"})
	if err != nil {
		t.Fatalf("CreateKernel: %v", err)
	}
	im, err := s.CreateImage(ctx, Image{
		Name: "debian", State: ImageReady, SourceKind: SourcePull, SourceRef: "debian:bookworm",
		DefaultKernelID: k.ID,
	})
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	return &fixtures{t: t, s: s, kernel: k, image: im}
}

// vm creates a VM named name from the fixture image.
func (f *fixtures) vm(name string) VM {
	f.t.Helper()
	vm, err := f.s.CreateVM(f.t.Context(), testVM(name, f.image.ID))
	if err != nil {
		f.t.Fatalf("CreateVM(%s): %v", name, err)
	}
	return vm
}

func testVM(name, imageID string) VM {
	return VM{Name: name, ImageID: imageID, VCPUs: 2, MemoryMiB: 1024, DiskBytes: 4 << 30, VMM: VMMQEMU}
}

func TestOpenFreshDatabase(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()

	if v, err := s.SchemaVersion(ctx); err != nil || v != latestVersion() {
		t.Errorf("SchemaVersion = %d, %v; want %d", v, err, latestVersion())
	}
	// The pragmas, as each pool sees them.
	for _, c := range []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.wdb, "journal_mode", "wal"},
		{s.rdb, "journal_mode", "wal"},
		{s.wdb, "foreign_keys", "1"},
		{s.rdb, "foreign_keys", "1"},
		{s.wdb, "synchronous", "2"}, // FULL
		{s.wdb, "busy_timeout", "10000"},
		{s.rdb, "query_only", "1"},
		{s.wdb, "query_only", "0"},
	} {
		var got string
		if err := c.db.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", c.pragma, err)
		}
		if got != c.want {
			t.Errorf("PRAGMA %s = %q, want %q", c.pragma, got, c.want)
		}
	}
	// Write something so the WAL exists, then check modes.
	if _, err := s.CreateKernel(ctx, Kernel{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
	// A read-only pool cannot write.
	if _, err := s.rdb.ExecContext(ctx, `DELETE FROM kernels`); err == nil {
		t.Errorf("write through the read pool succeeded")
	}
}

func TestMigrationsAreOrdered(t *testing.T) {
	for i, m := range migrations {
		if m.version != i+1 {
			t.Errorf("migrations[%d].version = %d, want %d", i, m.version, i+1)
		}
		if m.name == "" || strings.TrimSpace(m.sql) == "" {
			t.Errorf("migration %d has no name or no SQL", m.version)
		}
	}
}

func TestReopenIsIdempotent(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKernel(ctx, Kernel{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for i := range 3 {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		if v, err := s.SchemaVersion(ctx); err != nil || v != latestVersion() {
			t.Errorf("reopen %d: SchemaVersion = %d, %v; want %d", i, v, err, latestVersion())
		}
		var rows int
		if err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != len(migrations) {
			t.Errorf("reopen %d: schema_migrations has %d rows, want %d", i, rows, len(migrations))
		}
		if got, err := s.GetKernel(ctx, k.ID); err != nil || got.Name != "k" {
			t.Errorf("reopen %d: GetKernel = %+v, %v", i, got, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	tests := []struct {
		name string
		// setup makes path a database with schema version 7.
		setup func(t *testing.T, path string)
		// hotWAL: the database has a WAL to recover, so the read-only
		// check may add a -shm (never touching the database or the WAL).
		hotWAL bool
	}{
		{
			name: "banger database, WAL",
			setup: func(t *testing.T, path string) {
				s, err := Open(t.Context(), path)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.wdb.ExecContext(t.Context(),
					`INSERT INTO schema_migrations (version, name, applied_at) VALUES (7, 'from the future', '2030-01-01T00:00:00.000000000Z')`); err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			// A newer banger crashed right after migrating: version 7 is
			// only in the WAL.
			name:   "crashed newer banger, version only in WAL",
			hotWAL: true,
			setup: func(t *testing.T, path string) {
				src := filepath.Join(t.TempDir(), "banger.db")
				s := openTestStoreAt(t, src)
				if _, err := s.wdb.ExecContext(t.Context(),
					`INSERT INTO schema_migrations (version, name, applied_at) VALUES (7, 'from the future', '2030-01-01T00:00:00.000000000Z')`); err != nil {
					t.Fatal(err)
				}
				copyFile(t, src, path)
				copyFile(t, src+"-wal", path+"-wal")
			},
		},
		{
			// Never opened by this banger: rollback journal. Open must not
			// even switch it to WAL.
			name: "foreign database, rollback journal",
			setup: func(t *testing.T, path string) {
				db, err := sql.Open(driverName, path)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				if _, err := db.ExecContext(t.Context(), createMigrationsTable+`;
					INSERT INTO schema_migrations VALUES (7, 'from the future', 'x')`); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "banger.db")
			tt.setup(t, path)
			old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
			if err := os.Chtimes(path, old, old); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			walBefore, _ := os.ReadFile(path + "-wal")
			entriesBefore := dirNames(t, dir)

			s, err := Open(t.Context(), path)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded on a newer schema")
			}
			if !errors.Is(err, ErrFailedPrecondition) {
				t.Errorf("error %v does not wrap ErrFailedPrecondition", err)
			}
			want := "database banger.db has schema version 7 but this banger knows only up to 1: upgrade banger (or restore a backup)"
			if err.Error() != want {
				t.Errorf("error = %q\nwant    %q", err, want)
			}

			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(after) != string(before) {
				t.Errorf("database contents changed")
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.ModTime().Equal(old) {
				t.Errorf("database mtime = %v, want %v", fi.ModTime(), old)
			}
			if walAfter, _ := os.ReadFile(path + "-wal"); string(walAfter) != string(walBefore) {
				t.Errorf("WAL contents changed")
			}
			// Nothing created beside it either: no -wal, and no -shm
			// unless there was a WAL to read.
			got := dirNames(t, dir)
			if tt.hotWAL {
				got = slices.DeleteFunc(got, func(n string) bool { return n == "banger.db-shm" })
			}
			if !slices.Equal(got, entriesBefore) {
				t.Errorf("directory after Open = %q, want %q", got, entriesBefore)
			}
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// A daemon that died leaves a WAL with committed transactions and maybe no
// -shm; the next Open (read-only version check included) must recover them.
func TestOpenAfterCrash(t *testing.T) {
	ctx := t.Context()
	src := filepath.Join(t.TempDir(), "banger.db")
	s := openTestStoreAt(t, src)
	f := newFixtures(t, s)
	vm := f.vm("survivor")
	if err := s.AllocateIP(ctx, vm.ID, "10.0.0.2"); err != nil {
		t.Fatal(err)
	}
	// Snapshot the files while the store is open: what a crash leaves.
	dst := filepath.Join(t.TempDir(), "banger.db")
	if fi, err := os.Stat(src + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("no WAL to recover (%v): the test would test nothing", err)
	}
	copyFile(t, src, dst)
	copyFile(t, src+"-wal", dst+"-wal")

	s2 := openTestStoreAt(t, dst)
	got, err := s2.GetVMByName(ctx, "survivor")
	if err != nil {
		t.Fatalf("after crash: %v", err)
	}
	if got.ID != vm.ID {
		t.Errorf("after crash: vm id = %s, want %s", got.ID, vm.ID)
	}
	if a, err := s2.GetIPAllocation(ctx, vm.ID); err != nil || a.IP != "10.0.0.2" {
		t.Errorf("after crash: ip = %+v, %v", a, err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func openTestStoreAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		is   error
	}{
		{"empty path", "", ErrInvalidArgument},
		{"missing directory", filepath.Join(dir, "nope", "banger.db"), os.ErrNotExist},
		{"not a database", garbage, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.path)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestWithTx(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	f := newFixtures(t, s)
	boom := errors.New("boom")

	// Commit: both rows land.
	err := s.WithTx(ctx, func(tx *Tx) error {
		vm, err := tx.CreateVM(ctx, testVM("committed", f.image.ID))
		if err != nil {
			return err
		}
		return tx.AllocateIP(ctx, vm.ID, "10.0.0.5")
	})
	if err != nil {
		t.Fatalf("WithTx: %v", err)
	}
	vm, err := s.GetVMByName(ctx, "committed")
	if err != nil {
		t.Fatal(err)
	}
	if a, err := s.GetIPAllocation(ctx, vm.ID); err != nil || a.IP != "10.0.0.5" {
		t.Errorf("ip after commit = %+v, %v", a, err)
	}

	// Error: neither lands, and the error comes back unchanged.
	err = s.WithTx(ctx, func(tx *Tx) error {
		if _, err := tx.CreateVM(ctx, testVM("rolled-back", f.image.ID)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("WithTx error = %v, want boom", err)
	}
	if _, err := s.GetVMByName(ctx, "rolled-back"); !errors.Is(err, ErrNotFound) {
		t.Errorf("vm after rollback: %v, want not found", err)
	}

	// Panic: rolled back and re-raised; the writer is usable afterwards.
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic was swallowed")
			}
		}()
		s.WithTx(ctx, func(tx *Tx) error {
			if _, err := tx.CreateVM(ctx, testVM("panicked", f.image.ID)); err != nil {
				t.Error(err)
			}
			panic("boom")
		})
	}()
	if _, err := s.GetVMByName(ctx, "panicked"); !errors.Is(err, ErrNotFound) {
		t.Errorf("vm after panic: %v, want not found", err)
	}
	if _, err := s.CreateVM(ctx, testVM("after-panic", f.image.ID)); err != nil {
		t.Errorf("write after panic: %v", err)
	}

	// A constraint error inside the transaction is mapped like outside it.
	err = s.WithTx(ctx, func(tx *Tx) error {
		_, err := tx.CreateVM(ctx, testVM("committed", f.image.ID))
		return err
	})
	if !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate in tx: %v, want already exists", err)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("NewID() = %q, want 16 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestTimesRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	c := newClock()
	s.now = c.Now
	k, err := s.CreateKernel(ctx, Kernel{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2025, 3, 1, 12, 0, 1, 123456789, time.UTC)
	if !k.CreatedAt.Equal(want) || k.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want %v", k.CreatedAt, want)
	}
	var raw string
	if err := s.rdb.QueryRowContext(ctx, `SELECT created_at FROM kernels`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if raw != "2025-03-01T12:00:01.123456789Z" {
		t.Errorf("stored created_at = %q", raw)
	}
	// Fixed width keeps text order equal to time order.
	a, b := encodeTime(time.Unix(5, 100_000_000)), encodeTime(time.Unix(5, 120_000_000))
	if !(a < b) {
		t.Errorf("encodeTime order: %q !< %q", a, b)
	}
}
