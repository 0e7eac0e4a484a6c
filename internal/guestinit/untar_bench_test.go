package guestinit

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// BenchmarkExtractManyFiles extracts 5,000 small files in 100 directories
// two levels deep (a checkout's shape): the per-file cost of the untar
// built-in, which dominates a workspace import of many files. Run it with
// TMPDIR on a tmpfs to measure the extractor rather than the disk: on a
// long-lived ext4 the kernel's inode allocation (recently_deleted) can
// take most of the time, and serialise the writers.
func BenchmarkExtractManyFiles(b *testing.B) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := bytes.Repeat([]byte("x"), 2000)
	mt := time.Unix(1700000000, 0)
	for d := 0; d < 100; d++ {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("src/d%03d/", d), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
		for f := 0; f < 50; f++ {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("src/d%03d/f%02d.go", d, f), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mt})
			tw.Write(body)
		}
	}
	tw.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dest := b.TempDir()
		b.StartTimer()
		if err := extractTar(bytes.NewReader(buf.Bytes()), dest, os.Getuid(), os.Getgid()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*5000), "µs/file")
}
