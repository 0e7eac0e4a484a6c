package vmdisk

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
	"banger/internal/system"
	"banger/internal/system/systest"
)

// TestGrow grows a real ext4 made by mkfs.ext4 and reads its block count
// back with dumpe2fs. It needs e2fsprogs, not root.
func TestGrow(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (e2fsprogs): %v", tool, err)
		}
	}
	r := &system.ExecRunner{}
	disk := filepath.Join(t.TempDir(), "disk.ext4")
	makeSparse(t, disk, 64<<20)
	if _, err := r.Run(t.Context(), "mkfs.ext4", "-q", "-F", "-b", "4096", disk); err != nil {
		t.Fatal(err)
	}
	if got := blockCount(t, r, disk); got != 16384 {
		t.Fatalf("new file system has %d blocks, want 16384", got)
	}

	if err := Grow(t.Context(), r, disk, 256<<20); err != nil {
		t.Fatalf("Grow: %v", err)
	}
	if got := stat(t, disk).Size; got != 256<<20 {
		t.Errorf("disk file is %d bytes, want 256 MiB", got)
	}
	if got := blockCount(t, r, disk); got != 65536 {
		t.Errorf("grown file system has %d blocks, want 65536", got)
	}
	if _, err := r.Run(t.Context(), "e2fsck", "-f", "-n", disk); err != nil {
		t.Errorf("grown file system does not check clean: %v", err)
	}

	if err := Grow(t.Context(), r, disk, 128<<20); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("shrinking Grow = %v, want ErrFailedPrecondition", err)
	}
	if err := Grow(t.Context(), r, disk, 256<<20); err != nil {
		t.Errorf("Grow to the same size = %v, want nothing done", err)
	}
	if got := blockCount(t, r, disk); got != 65536 || stat(t, disk).Size != 256<<20 {
		t.Errorf("refused Grows changed the disk: %d blocks, %d bytes", got, stat(t, disk).Size)
	}
}

func blockCount(t *testing.T, r Runner, disk string) int {
	t.Helper()
	out, err := r.Run(t.Context(), "dumpe2fs", "-h", disk)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "Block count:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("dumpe2fs -h printed no block count:\n%s", out)
	return 0
}

// TestGrowCommands checks Grow's command sequence and its handling of
// each tool's failure with a scripted runner.
func TestGrowCommands(t *testing.T) {
	tests := []struct {
		name     string
		e2fsck   systest.Response
		resize   systest.Response
		wantLog  string
		wantErr  string // "" for success
		wantSize int64
	}{
		{
			name:     "clean",
			wantLog:  "e2fsck -f -y DISK\nresize2fs DISK\n",
			wantSize: 2 << 20,
		},
		{
			name:     "e2fsck corrected errors",
			e2fsck:   systest.Exit(1, "DISK: ***** FILE SYSTEM WAS MODIFIED *****\n"),
			wantLog:  "e2fsck -f -y DISK\nresize2fs DISK\n",
			wantSize: 2 << 20,
		},
		{
			name:     "e2fsck left errors",
			e2fsck:   systest.Exit(4, "DISK: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.\n"),
			wantLog:  "e2fsck -f -y DISK\n",
			wantErr:  "check its file system first",
			wantSize: 1 << 20,
		},
		{
			name:     "resize2fs fails",
			resize:   systest.Exit(1, "resize2fs: Bad magic number in super-block while trying to open DISK\n"),
			wantLog:  "e2fsck -f -y DISK\nresize2fs DISK\n",
			wantErr:  "grow its file system",
			wantSize: 2 << 20,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.ext4")
			makeSparse(t, disk, 1<<20)
			var f systest.Fake
			f.On([]string{"e2fsck", "-f", "-y", disk}, tt.e2fsck)
			f.On([]string{"resize2fs", disk}, tt.resize)
			err := Grow(t.Context(), &f, disk, 2<<20)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Grow: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Grow = %v, want an error with %q", err, tt.wantErr)
			}
			if d := cmp.Diff(tt.wantLog, strings.ReplaceAll(f.Log(), disk, "DISK")); d != "" {
				t.Errorf("commands (-want +got):\n%s", d)
			}
			if got := stat(t, disk).Size; got != tt.wantSize {
				t.Errorf("disk is %d bytes, want %d", got, tt.wantSize)
			}
		})
	}
	t.Run("refusals run nothing", func(t *testing.T) {
		dir := t.TempDir()
		disk := filepath.Join(dir, "disk.ext4")
		makeSparse(t, disk, 1<<20)
		var f systest.Fake
		for _, c := range []struct {
			path string
			size int64
			is   error
		}{
			{disk, 1<<20 - 4096, errdefs.ErrFailedPrecondition},
			{dir, 2 << 20, errdefs.ErrInvalidArgument},
			{filepath.Join(dir, "nope"), 2 << 20, os.ErrNotExist},
		} {
			if err := Grow(t.Context(), &f, c.path, c.size); !errors.Is(err, c.is) {
				t.Errorf("Grow(%s, %d) = %v, want %v", c.path, c.size, err, c.is)
			}
		}
		if log := f.Log(); log != "" {
			t.Errorf("refused Grows ran commands:\n%s", log)
		}
	})
}
