package ocitest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Layer writes entries, in order, as a tar stream to a temporary file and
// returns it as a gzip-compressed OCI layer. The layer compresses from the
// file whenever its blob is read, so it is valid until the test ends.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	return layer(t, entries, tarball.WithMediaType(types.OCILayer))
}

// ZstdLayer is Layer with zstd compression
// (application/vnd.oci.image.layer.v1.tar+zstd).
func ZstdLayer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	return layer(t, entries,
		tarball.WithCompression(compression.ZStd),
		tarball.WithMediaType(types.OCILayerZStd))
}

func layer(t testing.TB, entries []Entry, opts ...tarball.LayerOption) v1.Layer {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "layer-*.tar")
	if err != nil {
		t.Fatalf("ocitest: %v", err)
	}
	name := f.Name()
	err = writeTar(f, entries)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("ocitest: writing layer %s: %v", filepath.Base(name), err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(name) }, opts...)
	if err != nil {
		t.Fatalf("ocitest: layer from %s: %v", filepath.Base(name), err)
	}
	return l
}

// writeTar writes entries as a tar stream to w.
func writeTar(w io.Writer, entries []Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h, err := e.header()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("entry %q: %w", e.Name, err)
		}
		body := io.Reader(bytes.NewReader(e.Body))
		if e.BodySize != 0 {
			body = GeneratedBody(e.Name, e.BodySize)
		}
		if _, err := io.Copy(tw, body); err != nil {
			return fmt.Errorf("entry %q: %w", e.Name, err)
		}
	}
	return tw.Close()
}
