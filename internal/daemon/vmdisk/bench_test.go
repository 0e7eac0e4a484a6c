package vmdisk

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// bench2GB is the benchmark image: 2 GiB, 200 MiB of data in 100 runs of
// 2 MiB spread over it, the rest holes, like a freshly made VM image.
const (
	bench2GBSize = 2 << 30
	benchRuns    = 100
	benchRun     = 2 << 20
)

func makeBenchImage(b *testing.B, path string) {
	b.Helper()
	exts := make([]extent, benchRuns)
	for i := range exts {
		exts[i] = extent{int64(i) * (bench2GBSize / benchRuns) &^ 4095, benchRun}
	}
	makeSparse(b, path, bench2GBSize, exts...)
}

// BenchmarkClone2GB measures making a VM disk from a 2 GiB image with
// 200 MiB of data, per strategy this host has: reflink on a loop-mounted
// XFS (root and xfsprogs needed), a sparse copy in the test's temporary
// directory. Each clone is synced, as the daemon's are; the source is in
// the page cache after the first iteration.
//
//	go test -run '^$' -bench BenchmarkClone2GB -benchtime 10x ./internal/daemon/vmdisk/
func BenchmarkClone2GB(b *testing.B) {
	b.Run("reflink", func(b *testing.B) {
		dir := mountXFS(b, 4<<30)
		src := filepath.Join(dir, "image.ext4")
		makeBenchImage(b, src)
		benchClone(b, dir, func(dst string) error { return Reflink(src, dst) })
	})
	b.Run("copy", func(b *testing.B) {
		dir := b.TempDir()
		src := filepath.Join(dir, "image.ext4")
		makeBenchImage(b, src)
		benchClone(b, dir, func(dst string) error { return SparseCopy(b.Context(), src, dst) })
	})
}

func benchClone(b *testing.B, dir string, clone func(dst string) error) {
	b.SetBytes(benchRuns * benchRun)
	i := 0
	for b.Loop() {
		dst := filepath.Join(dir, fmt.Sprintf("disk-%d", i))
		i++
		if err := clone(dst); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.Remove(dst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
