package ocitest

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
)

// GeneratedBody returns the content of a file made with BodySize: size
// deterministic bytes seeded by name, generated as they are read. About
// 40% of its 4 KiB blocks are random and the rest repeat one block of
// low entropy, so it compresses roughly 2–3× with gzip, like real binaries.
func GeneratedBody(name string, size int64) io.Reader {
	g := &generator{rng: rand.NewChaCha8(sha256.Sum256([]byte(name))), left: size}
	// The filler is a short random pattern repeated: even gzip's fastest
	// level, which ggcr uses, finds those matches.
	g.rng.Read(g.filler[:genPattern])
	for i := genPattern; i < genBlock; i += genPattern {
		copy(g.filler[i:], g.filler[:genPattern])
	}
	return g
}

const (
	genBlock         = 4 << 10
	genPattern       = 256
	genRandomPercent = 40
)

type generator struct {
	rng    *rand.ChaCha8
	left   int64 // bytes still to produce
	filler [genBlock]byte
	block  [genBlock]byte
	cur    []byte // unread rest of the current block
}

func (g *generator) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.left > 0 {
		if len(g.cur) == 0 {
			if g.rng.Uint64()%100 < genRandomPercent {
				g.rng.Read(g.block[:])
				g.cur = g.block[:]
			} else {
				g.cur = g.filler[:]
			}
		}
		c := copy(p[n:], g.cur[:min(int64(len(g.cur)), g.left)])
		g.cur = g.cur[c:]
		g.left -= int64(c)
		n += c
	}
	return n, nil
}
