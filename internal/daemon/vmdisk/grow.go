package vmdisk

import (
	"context"
	"errors"
	"fmt"
	"os"

	"banger/internal/errdefs"
	"banger/internal/system"
)

// Grow enlarges the disk file at path to newSize bytes and the ext4 file
// system inside it to fill the file: `e2fsck -f -y PATH` (resize2fs wants
// a freshly checked file system; exit status 1, "errors corrected", is
// fine), then the file is extended (sparse), then `resize2fs PATH`. The
// disk must not be in use. Shrinking is refused with
// errdefs.ErrFailedPrecondition; the same size does nothing. If
// resize2fs fails the file stays longer than its file system, which is
// harmless: cutting it back could lose blocks resize2fs had started to use.
func Grow(ctx context.Context, r Runner, path string, newSize int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("grow disk: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("grow disk %s: not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	switch {
	case newSize < fi.Size():
		return fmt.Errorf("grow disk %s from %d to %d bytes: disks can grow but not shrink: %w", path, fi.Size(), newSize, errdefs.ErrFailedPrecondition)
	case newSize == fi.Size():
		return nil
	}
	if _, err := r.Run(ctx, "e2fsck", "-f", "-y", path); err != nil && !errorsCorrected(err) {
		return fmt.Errorf("grow disk %s: check its file system first: %w", path, err)
	}
	if err := os.Truncate(path, newSize); err != nil {
		return fmt.Errorf("grow disk %s: %w", path, err)
	}
	if _, err := r.Run(ctx, "resize2fs", path); err != nil {
		return fmt.Errorf("grow disk %s: grow its file system: %w", path, err)
	}
	return nil
}

// errorsCorrected reports whether err is e2fsck exiting 1: it found and
// fixed errors, and the file system is now consistent.
func errorsCorrected(err error) bool {
	var ce *system.CommandError
	return errors.As(err, &ce) && ce.ExitCode == 1
}
