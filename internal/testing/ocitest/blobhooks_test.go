package ocitest

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushedLayer pushes a one-layer image of a size-byte file and returns the
// registry and a reference to the layer's blob.
func pushedLayer(t *testing.T, size int64) (*Registry, name.Digest, v1.Layer) {
	t.Helper()
	reg := StartRegistry(t)
	l := Layer(t, SizedFile("blob", 0o644, size))
	Push(t, reg.Ref("banger/blobs:1"), Image(t, ImageConfig{}, l))
	ref, err := name.NewDigest(reg.Ref("banger/blobs@" + digest(t, l).String()))
	if err != nil {
		t.Fatal(err)
	}
	return reg, ref, l
}

// download reads the whole compressed blob of ref.
func download(ctx context.Context, ref name.Digest) (int64, error) {
	l, err := remote.Layer(ref, remote.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(io.Discard, rc)
}

func TestBlobGets(t *testing.T) {
	reg, ref, l := pushedLayer(t, 64<<10)
	d := digest(t, l).String()
	if n := reg.BlobGets(d); n != 0 {
		t.Fatalf("after push BlobGets = %d, want 0 (a push only HEADs)", n)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := download(t.Context(), ref); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := reg.BlobGets(d); n != 3 {
		t.Errorf("after 3 downloads BlobGets = %d, want 3", n)
	}
	if n := reg.BlobGets("sha256:0000"); n != 0 {
		t.Errorf("BlobGets of an unknown digest = %d, want 0", n)
	}
}

func TestBlobDelay(t *testing.T) {
	reg, ref, _ := pushedLayer(t, 1<<10)
	const delay = 300 * time.Millisecond
	reg.SetBlobDelay(delay)
	start := time.Now()
	if _, err := download(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("download took %v, want at least the %v delay", took, delay)
	}
}

func TestBlobRate(t *testing.T) {
	reg, ref, l := pushedLayer(t, 256<<10)
	size, err := l.Size()
	if err != nil {
		t.Fatal(err)
	}
	const rate = 256 << 10 // bytes/second
	reg.SetBlobRate(rate)

	t.Run("slows the download", func(t *testing.T) {
		start := time.Now()
		if _, err := download(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
		// The last chunk's pause may not be waited for: allow one chunk.
		atLeast := time.Duration(size-rate/20) * time.Second / rate
		if took := time.Since(start); took < atLeast {
			t.Errorf("%d bytes at %d B/s took %v, want at least %v", size, rate, took, atLeast)
		}
	})

	t.Run("cancel mid-download", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		n, err := download(ctx, ref)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("download error = %v, want %v", err, context.DeadlineExceeded)
		}
		if n >= size {
			t.Errorf("read all %d bytes before the cancel", n)
		}
	})
}
