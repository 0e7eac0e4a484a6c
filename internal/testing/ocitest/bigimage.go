package ocitest

import (
	"fmt"
	"math/rand/v2"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BigImage is an image for benchmarks: layers layers of many files of mixed
// sizes (mostly small, a few of several MiB) whose contents total
// totalBytes, with GeneratedBody content that gzip compresses about 2–3×.
// It is deterministic for given arguments and built through temporary
// files, so memory use does not grow with totalBytes.
func BigImage(t testing.TB, totalBytes int64, layers int) v1.Image {
	t.Helper()
	if layers <= 0 || totalBytes < 0 {
		t.Fatalf("ocitest: BigImage(%d bytes, %d layers): need layers > 0 and bytes >= 0", totalBytes, layers)
	}
	rng := rand.New(rand.NewPCG(uint64(totalBytes), uint64(layers)))
	ls := make([]v1.Layer, layers)
	for i := range ls {
		budget := totalBytes / int64(layers)
		if i == layers-1 {
			budget = totalBytes - budget*int64(layers-1)
		}
		ls[i] = Layer(t, bigLayerEntries(rng, i, budget)...)
	}
	return Image(t, ImageConfig{Cmd: []string{"/bin/sh"}}, ls...)
}

// bigLayerEntries lays budget bytes out as files in directories of 64.
func bigLayerEntries(rng *rand.Rand, layer int, budget int64) []Entry {
	const perDir = 64
	root := fmt.Sprintf("usr/lib/big%d", layer)
	entries := []Entry{Dir("usr", 0o755), Dir("usr/lib", 0o755), Dir(root, 0o755)}
	for n := 0; budget > 0; n++ {
		dir := fmt.Sprintf("%s/d%03d", root, n/perDir)
		if n%perDir == 0 {
			entries = append(entries, Dir(dir, 0o755))
		}
		size := min(fileSize(rng), budget)
		budget -= size
		mode := int64(0o644)
		if n%5 == 0 {
			mode = 0o755
		}
		entries = append(entries, SizedFile(fmt.Sprintf("%s/f%05d", dir, n), mode, size))
	}
	return entries
}

// fileSize draws a size: 70% 512 B–16 KiB, 25% up to 512 KiB, 5% up to 8 MiB.
func fileSize(rng *rand.Rand) int64 {
	switch r := rng.IntN(100); {
	case r < 70:
		return 512 + rng.Int64N(16<<10)
	case r < 95:
		return 16<<10 + rng.Int64N(496<<10)
	default:
		return 512<<10 + rng.Int64N(7680<<10)
	}
}
