package ocitest

import (
	"bytes"
	"io"
	"runtime"
	"testing"
)

func TestBigImage(t *testing.T) {
	const total = 20 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	img := BigImage(t, total, 3)
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("live heap grew %d KiB building a %d MiB image", (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10, total>>20)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > total/4 {
		t.Errorf("live heap grew %d bytes building a %d-byte image; layers should stay in files", grew, total)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 3 {
		t.Fatalf("%d layers, want 3", len(layers))
	}
	var uncompressed, compressed int64
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		uncompressed += n
		size, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		compressed += size
	}
	ratio := float64(uncompressed) / float64(compressed)
	t.Logf("uncompressed %d bytes, compressed %d, ratio %.2f", uncompressed, compressed, ratio)
	// File contents total exactly total; tar headers and padding add a little.
	if uncompressed < total || uncompressed > total+total/20 {
		t.Errorf("uncompressed size %d, want %d to %d", uncompressed, total, total+total/20)
	}
	if ratio < 1.8 || ratio > 3.5 {
		t.Errorf("gzip ratio %.2f, want about 2–3", ratio)
	}
}

func TestGeneratedBody(t *testing.T) {
	read := func(name string, size int64) []byte {
		b, err := io.ReadAll(GeneratedBody(name, size))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := read("usr/bin/a", 100_003)
	if len(a) != 100_003 {
		t.Errorf("len = %d, want 100003", len(a))
	}
	if !bytes.Equal(a, read("usr/bin/a", 100_003)) {
		t.Error("same name and size gave different bodies")
	}
	if !bytes.Equal(a[:5000], read("usr/bin/a", 5000)) {
		t.Error("a shorter body is not a prefix of the longer one")
	}
	if bytes.Equal(a, read("usr/bin/b", 100_003)) {
		t.Error("different names gave the same body")
	}
	if n := len(read("empty", 0)); n != 0 {
		t.Errorf("size 0 gave %d bytes", n)
	}
}
