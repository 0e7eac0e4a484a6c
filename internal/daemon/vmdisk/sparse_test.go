package vmdisk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/errdefs"
)

func TestSparseCopy(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name string
		size int64
		exts []extent
	}{
		{"holes and data", 40 * mib, []extent{{0, 64 << 10}, {5 * mib, mib}, {20*mib + 100, 5000}}},
		{"ends in data", 12 * mib, []extent{{mib, mib}, {11 * mib, mib}}},
		{"starts with a hole, odd size", 3*mib + 17, []extent{{2 * mib, mib + 17}}},
		{"all data", 3 * mib, []extent{{0, 3 * mib}}},
		{"all hole", 1 << 30, nil},
		{"empty", 0, nil},
		{"data past several chunks", 3*copyChunk + mib, []extent{{0, 3*copyChunk + mib}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			makeSparse(t, src, tt.size, tt.exts...)
			if err := SparseCopy(t.Context(), src, dst); err != nil {
				t.Fatalf("SparseCopy: %v", err)
			}
			ss, ds := stat(t, src), stat(t, dst)
			if ds.Size != tt.size {
				t.Errorf("copy is %d bytes, want %d", ds.Size, tt.size)
			}
			if ds.Mode&0o777 != 0o600 {
				t.Errorf("copy has mode %o, want 600", ds.Mode&0o777)
			}
			if !sameContent(t, src, dst) {
				t.Error("copy's content differs from the source's")
			}
			// Allocated blocks (512 B units) follow the data, not the size:
			// within 64 KiB of the source's.
			if ds.Blocks > ss.Blocks+128 {
				t.Errorf("copy allocates %d blocks, source %d: holes were filled", ds.Blocks, ss.Blocks)
			}
		})
	}
}

// TestSparseCopyLargeSparseFile copies a 2 GiB file holding 4 MiB of
// data: only the data is copied, so the copy allocates about 4 MiB.
func TestSparseCopyLargeSparseFile(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	makeSparse(t, src, 2<<30, extent{0, 1 << 20}, extent{700 << 20, 1 << 20}, extent{1500 << 20, 1 << 20}, extent{2<<30 - 1<<20, 1 << 20})
	// Not a timing assertion (a benchmark measures that); it only stops
	// a copy that writes 2 GiB from hanging the suite.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := SparseCopy(ctx, src, dst); err != nil {
		t.Fatalf("SparseCopy: %v", err)
	}
	t.Logf("copied a 2 GiB file with 4 MiB of data in %v", time.Since(start))
	ds := stat(t, dst)
	if ds.Size != 2<<30 {
		t.Errorf("copy is %d bytes, want 2 GiB", ds.Size)
	}
	if got := ds.Blocks * 512; got > 8<<20 {
		t.Errorf("copy allocates %d bytes for 4 MiB of data", got)
	}
	if !sameContent(t, src, dst) {
		t.Error("copy's content differs from the source's")
	}
}

// countdownCtx is live for its first n Err calls, then cancelled: it
// cancels a copy part-way through, deterministically.
type countdownCtx struct {
	context.Context
	n atomic.Int32
}

func (c *countdownCtx) Err() error {
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

func TestSparseCopyCancel(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeSparse(t, src, 4*copyChunk, extent{0, 4 * copyChunk})

	t.Run("before it starts", func(t *testing.T) {
		dst := filepath.Join(dir, "dst1")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := SparseCopy(ctx, src, dst); !errors.Is(err, context.Canceled) {
			t.Fatalf("SparseCopy = %v, want context.Canceled", err)
		}
		if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("dst exists after a cancelled copy: %v", err)
		}
	})
	t.Run("part-way", func(t *testing.T) {
		dst := filepath.Join(dir, "dst2")
		ctx := &countdownCtx{Context: t.Context()}
		ctx.n.Store(3) // the entry check and two chunks
		if err := SparseCopy(ctx, src, dst); !errors.Is(err, context.Canceled) {
			t.Fatalf("SparseCopy = %v, want context.Canceled", err)
		}
		if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("dst exists after a cancelled copy: %v", err)
		}
	})
}

func TestSparseCopyRefuses(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	makeSparse(t, src, 1<<20, extent{0, 4096})
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SparseCopy(t.Context(), src, dst); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("SparseCopy over an existing file = %v, want ErrAlreadyExists", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("existing dst changed to %q", b)
	}
	missing := filepath.Join(dir, "dst-of-missing")
	if err := SparseCopy(t.Context(), filepath.Join(dir, "nope"), missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SparseCopy of a missing source = %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dst made for a missing source: %v", err)
	}
	if err := SparseCopy(t.Context(), dir, filepath.Join(dir, "dst-of-dir")); err == nil {
		t.Error("SparseCopy of a directory succeeded")
	}
}

// TestReadWriteFallback copies through the path used where
// copy_file_range cannot: same content, and zero blocks stay holes.
func TestReadWriteFallback(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	makeSparse(t, src, 6<<20, extent{0, 1 << 20}, extent{3 << 20, 1<<20 + 5})
	// Written zeros: allocated in src, to become a hole in dst.
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 1<<20), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sf, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	df, err := createNew(dst)
	if err != nil {
		t.Fatal(err)
	}
	c := &copier{ctx: t.Context(), src: sf, dst: df, cfr: false}
	if err := c.copyRange(0, 6<<20); err != nil {
		t.Fatalf("copyRange: %v", err)
	}
	if err := df.Truncate(6 << 20); err != nil {
		t.Fatal(err)
	}
	df.Close()
	if !sameContent(t, src, dst) {
		t.Error("copy's content differs from the source's")
	}
	if ss, ds := stat(t, src), stat(t, dst); ds.Blocks >= ss.Blocks-1024 {
		t.Errorf("copy allocates %d blocks, source %d: written zeros were copied", ds.Blocks, ss.Blocks)
	}
}
