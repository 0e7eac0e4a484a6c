package dmsnap

import (
	"fmt"
	"os"

	"banger/internal/errdefs"
)

const (
	chunkBytes = chunkSectors * 512
	// exceptionsPerChunk is how many 16-byte exception records one
	// metadata chunk of a persistent store holds.
	exceptionsPerChunk = chunkBytes / 16
)

// MinCOWSize is the smallest COW file that never fills up under a
// snapshot of imageBytes, whatever the guest writes: a header chunk, one
// chunk per image chunk, and the metadata chunks recording them (one per
// 256 data chunks at 4 KiB).
func MinCOWSize(imageBytes int64) int64 {
	data := (imageBytes + chunkBytes - 1) / chunkBytes
	meta := (data + exceptionsPerChunk - 1) / exceptionsPerChunk
	return (1 + data + meta) * chunkBytes
}

// MakeCOW creates the COW file at path: new (an existing file is
// errdefs.ErrAlreadyExists), mode 0600, sparse, size bytes long. The
// kernel initialises its store on first use because it reads as zeros.
func MakeCOW(path string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("dmsnap: COW file %s: size %d: %w", path, size, errdefs.ErrInvalidArgument)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if os.IsExist(err) {
			return fmt.Errorf("dmsnap: COW file: %w: %w", err, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("dmsnap: COW file: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("dmsnap: COW file %s: %w", path, err)
	}
	return nil
}
