package imagemgr

import (
	"bufio"
	"bytes"

	"fmt"
	"io"
	"strconv"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"banger/internal/errdefs"
)

// zstdMaxWindow bounds the memory a zstd layer may make the decoder
// allocate: 128 MiB, the window of `zstd --long=27`; ordinary layers use
// 8 MiB or less. A frame asking for more is refused.
const zstdMaxWindow = 128 << 20

// magic numbers of the formats OpenLayer recognises.
var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte("BZh")
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicLz4   = []byte{0x04, 0x22, 0x4d, 0x18}
	magicLzw   = []byte{0x1f, 0x9d}
)

// OpenLayer returns the uncompressed tar stream of a layer blob, telling
// gzip, zstd and plain tar apart by their first bytes. Other compressions
// (bzip2, xz, lz4, compress) and data that is not a tar header are
// refused with an error wrapping errdefs.ErrInvalidArgument. Closing the
// result releases the decompressor; it does not close r.
func OpenLayer(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(512)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read layer: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("layer is not valid gzip: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		return zr, nil
	case bytes.HasPrefix(head, magicZstd):
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(zstdMaxWindow),
			zstd.WithDecoderMaxMemory(zstdMaxWindow))
		if err != nil {
			return nil, fmt.Errorf("layer is not valid zstd: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		return zstdCloser{zr}, nil
	}
	for _, c := range []struct {
		magic []byte
		name  string
	}{{magicBzip2, "bzip2"}, {magicXz, "xz"}, {magicLz4, "lz4"}, {magicLzw, "compress (.Z)"}} {
		if bytes.HasPrefix(head, c.magic) {
			return nil, fmt.Errorf("layer is %s-compressed; banger reads gzip, zstd and uncompressed tar layers: %w",
				c.name, errdefs.ErrInvalidArgument)
		}
	}
	if !looksLikeTar(head) {
		return nil, fmt.Errorf("layer is neither gzip, zstd nor a tar archive (first bytes % x): %w",
			head[:min(len(head), 8)], errdefs.ErrInvalidArgument)
	}
	return io.NopCloser(br), nil
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// looksLikeTar reports whether head starts a tar archive: a header block
// whose checksum is right, or zeros only (an empty archive's end marker;
// an empty stream counts as an empty archive too).
func looksLikeTar(head []byte) bool {
	if len(bytes.Trim(head, "\x00")) == 0 {
		return true
	}
	if len(head) < 512 {
		return false
	}
	field := bytes.Trim(head[148:156], " \x00")
	want, err := strconv.ParseInt(string(field), 8, 64)
	if err != nil {
		return false
	}
	// The checksum is the sum of the header's bytes with the checksum
	// field read as spaces; some old writers summed signed bytes.
	var unsigned, signed int64
	for i, c := range head[:512] {
		if 148 <= i && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}
