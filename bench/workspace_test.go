package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/daemon/workspace"
	"banger/internal/guestinit"
)

// BenchmarkWorkspacePack measures a workspace import's host and guest
// halves without a VM: workspace.Pack (files + .git, hashed into a
// manifest) piped into the guest init's receiver (guestinit.Untar) into a
// fresh directory, against `git ls-files -z | tar --null -T - -cf - | tar
// -xf -` into another, on a synthetic checkout of 20,000 files / ~100 MB
// (one commit, packed). Then an incremental Pack after changing 10 files.
// The SSH hop of a real import is left out of both sides alike.
func BenchmarkWorkspacePack(b *testing.B) {
	if _, err := exec.LookPath("git"); err != nil {
		b.Skip("git not installed")
	}
	g := workspace.ExecGit{Env: []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b"}}
	repo, files := syntheticRepo(b, g, 20000, 100<<20)
	ctx := context.Background()
	r, err := workspace.Inspect(ctx, g, repo)
	if err != nil {
		b.Fatal(err)
	}
	var packT, toolT, incT time.Duration
	var m *workspace.Manifest
	for i := 0; i < b.N; i++ {
		dest := filepath.Join(b.TempDir(), "banger")
		start := time.Now()
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- guestinit.Untar(pr, dest) }()
		m, err = workspace.Pack(ctx, g, r, pw, nil)
		pw.CloseWithError(err)
		if err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		packT += time.Since(start)

		dest2 := filepath.Join(b.TempDir(), "tar")
		os.Mkdir(dest2, 0o755)
		start = time.Now()
		cmd := exec.Command("bash", "-c", `git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$1"`, "bash", dest2)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pipeline: %v\n%s", err, out)
		}
		toolT += time.Since(start)

		for j := 0; j < 10; j++ {
			p := filepath.Join(repo, files[(i*10+j)*1931%len(files)])
			os.WriteFile(p, []byte(fmt.Sprintf("changed %d %d\n", i, j)), 0o644)
		}
		start = time.Now()
		m2, err := workspace.Pack(ctx, g, r, io.Discard, m)
		if err != nil {
			b.Fatal(err)
		}
		incT += time.Since(start)
		if m2.Stats.Sent > 11 {
			b.Fatalf("incremental pack sent %d entries", m2.Stats.Sent)
		}
		os.RemoveAll(dest)
		os.RemoveAll(dest2)
	}
	n := time.Duration(b.N)
	ms := func(d time.Duration) float64 { return float64(d/n) / float64(time.Millisecond) }
	b.ReportMetric(ms(packT), "banger-import-ms")
	b.ReportMetric(ms(toolT), "tar-pipeline-ms")
	b.ReportMetric(float64(toolT)/float64(packT), "speedup")
	b.ReportMetric(ms(incT), "incremental-10-files-ms")
	b.ReportMetric(float64(m.Stats.SentBytes)/(1<<20), "first-MiB-sent")
}

// syntheticRepo makes a committed checkout of n files totalling about
// size bytes (sizes skewed: many small, a few large), in 200 directories,
// and returns it with its file names.
func syntheticRepo(b *testing.B, g workspace.ExecGit, n int, size int64) (string, []string) {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "repo")
	rng := rand.New(rand.NewPCG(1, 2))
	files := make([]string, n)
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(rng.IntN(64) + ' ') // compresses like source text, roughly
	}
	avg := size / int64(n)
	for i := range files {
		files[i] = fmt.Sprintf("dir%03d/file%05d.txt", i%200, i)
		sz := rng.Int64N(avg * 2)
		if i%1000 == 0 {
			sz = avg * 40
		}
		sz = min(sz, int64(len(buf)))
		p := filepath.Join(dir, files[i])
		os.MkdirAll(filepath.Dir(p), 0o755)
		off := rng.IntN(len(buf) - int(sz) + 1)
		if err := os.WriteFile(p, buf[off:off+int(sz)], 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"-c", "gc.auto=0", "commit", "-q", "-m", "synthetic"}, {"gc", "-q"}} {
		if err := g.Run(context.Background(), dir, nil, nil, nil, args...); err != nil {
			b.Fatal(err)
		}
	}
	return dir, files
}
