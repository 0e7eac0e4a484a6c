package ocitest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// tarEntry is what the tests compare of a tar entry.
type tarEntry struct {
	Name               string
	Type               byte
	Mode               int64
	UID, GID           int
	Linkname           string
	Devmajor, Devminor int64
	ModTime            time.Time
	Xattrs             map[string]string
	Size               int64
	SHA256             string
}

// want is the tarEntry e should come back as.
func want(t *testing.T, e Entry) tarEntry {
	t.Helper()
	h, err := e.header()
	if err != nil {
		t.Fatal(err)
	}
	body := io.Reader(bytes.NewReader(e.Body))
	if e.BodySize != 0 {
		body = GeneratedBody(e.Name, e.BodySize)
	}
	return tarEntry{
		Name: h.Name, Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid,
		Linkname: h.Linkname, Devmajor: h.Devmajor, Devminor: h.Devminor,
		ModTime: h.ModTime, Xattrs: e.Xattrs, Size: h.Size, SHA256: sum(t, body),
	}
}

// readEntries reads the tar stream of l.
func readEntries(t *testing.T, l v1.Layer) []tarEntry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []tarEntry
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var xattrs map[string]string
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if xattrs == nil {
					xattrs = map[string]string{}
				}
				xattrs[x] = v
			}
		}
		out = append(out, tarEntry{
			Name: h.Name, Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid,
			Linkname: h.Linkname, Devmajor: h.Devmajor, Devminor: h.Devminor,
			ModTime: h.ModTime.UTC(), Xattrs: xattrs, Size: h.Size, SHA256: sum(t, tr),
		})
	}
}

func sum(t *testing.T, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func pull(t *testing.T, ref string, opts ...remote.Option) (v1.Image, error) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	return remote.Image(r, append([]remote.Option{remote.WithContext(t.Context())}, opts...)...)
}

func digest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
