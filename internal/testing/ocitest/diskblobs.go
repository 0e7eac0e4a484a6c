package ocitest

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// diskBlobs keeps the registry's blobs as files in dir, so big images do
// not sit in memory once pushed. (The registry still buffers a blob's
// upload in memory until the upload completes.)
//
// registry.NewDiskBlobHandler would do, but it re-hashes the whole blob on
// every HEAD and GET; the registry already verifies the digest on upload.
type diskBlobs struct {
	dir string
}

var (
	_ registry.BlobHandler     = (*diskBlobs)(nil)
	_ registry.BlobStatHandler = (*diskBlobs)(nil)
	_ registry.BlobPutHandler  = (*diskBlobs)(nil)
)

func newDiskBlobs(dir string) *diskBlobs { return &diskBlobs{dir: dir} }

func (d *diskBlobs) path(h v1.Hash) string { return filepath.Join(d.dir, h.Algorithm+"-"+h.Hex) }

func (d *diskBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	fi, err := os.Stat(d.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, registry.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Get returns the *os.File itself: it is an io.ReaderAt, which the registry
// uses to serve Range requests without reading the skipped bytes.
func (d *diskBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(d.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, registry.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Put stores rc under h. rc fails at its end if the bytes do not match h;
// the blob is then discarded.
func (d *diskBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	f, err := os.CreateTemp(d.dir, "upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), d.path(h))
}
