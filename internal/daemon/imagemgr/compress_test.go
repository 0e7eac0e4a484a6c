package imagemgr

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"banger/internal/errdefs"
)

func TestOpenLayer(t *testing.T) {
	plain := layer(t, file("etc/os-release", "ID=test\n"), dirEnt("usr/"))
	gz := func() []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write(plain)
		w.Close()
		return b.Bytes()
	}()
	zs := func() []byte {
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		return enc.EncodeAll(plain, nil)
	}()
	tests := []struct {
		name string
		in   []byte
		want []byte
		err  string
	}{
		{name: "plain", in: plain, want: plain},
		{name: "gzip", in: gz, want: plain},
		{name: "zstd", in: zs, want: plain},
		{name: "empty tar", in: make([]byte, 1024), want: make([]byte, 1024)},
		{name: "empty stream", in: nil, want: nil},
		{name: "bzip2", in: []byte("BZh91AY&SY" + strings.Repeat("x", 600)), err: "bzip2-compressed"},
		{name: "xz", in: append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, make([]byte, 600)...), err: "xz-compressed"},
		{name: "garbage", in: []byte(strings.Repeat("not a tar at all ", 64)), err: "neither gzip, zstd nor a tar"},
		{name: "short garbage", in: []byte("hello"), err: "neither gzip, zstd nor a tar"},
		{name: "tar with a bad checksum", in: func() []byte {
			b := bytes.Clone(plain)
			b[0] ^= 0xff
			return b
		}(), err: "neither gzip, zstd nor a tar"},
		{name: "gzip header only", in: []byte{0x1f, 0x8b, 0x08}, err: "not valid gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := OpenLayer(bytes.NewReader(tt.in))
			if tt.err != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want ErrInvalidArgument saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

func TestOpenLayerRefusesHugeZstdWindow(t *testing.T) {
	// A frame header asking for a 1 GiB window (Window_Descriptor
	// exponent 20 → 2^30), with no checksum and no content size.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3}
	rc, err := OpenLayer(bytes.NewReader(append(frame, make([]byte, 64)...)))
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "window") {
		t.Fatalf("err = %v, want a window-size refusal", err)
	}
}

func TestOpenLayerThenFlatten(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(layer(t, file("hello", "world")))
	w.Close()
	rc, err := OpenLayer(&b)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f, err := NewFlattener(s.root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ApplyLayer(rc, "gz"); err != nil {
		t.Fatal(err)
	}
	if err := f.Finish(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, s.path("hello")); got != "world" {
		t.Errorf("hello = %q", got)
	}
}
