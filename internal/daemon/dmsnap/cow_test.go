package dmsnap

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"banger/internal/errdefs"
)

func TestMinCOWSize(t *testing.T) {
	tests := []struct{ image, want int64 }{
		{0, 4096},                          // header only
		{4096, 3 * 4096},                   // header, one data chunk, one metadata chunk
		{256 * 4096, (1 + 256 + 1) * 4096}, // one metadata chunk holds 256 exceptions
		{257 * 4096, (1 + 257 + 2) * 4096},
		{4097, (1 + 2 + 1) * 4096}, // a partial chunk is a whole one
		{1 << 30, (1 + 262144 + 1024) * 4096},
	}
	for _, tt := range tests {
		if got := MinCOWSize(tt.image); got != tt.want {
			t.Errorf("MinCOWSize(%d) = %d, want %d", tt.image, got, tt.want)
		}
	}
}

func TestMakeCOW(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.cow")
	if err := MakeCOW(path, 1<<30); err != nil {
		t.Fatalf("MakeCOW: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 1<<30 || fi.Mode().Perm() != 0o600 {
		t.Errorf("COW file is %d bytes, mode %v; want 1 GiB, 0600", fi.Size(), fi.Mode().Perm())
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks != 0 {
		t.Errorf("COW file has %d blocks allocated, want a sparse file", blocks)
	}
	if err := MakeCOW(path, 1<<20); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("MakeCOW over an existing file = %v, want ErrAlreadyExists", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 1<<30 {
		t.Errorf("existing COW file changed to %d bytes", fi.Size())
	}
	if err := MakeCOW(filepath.Join(t.TempDir(), "x"), 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("MakeCOW size 0 = %v, want ErrInvalidArgument", err)
	}
}
