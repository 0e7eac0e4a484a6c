package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/testing/ocitest"
)

// BenchmarkImagePull pulls and flattens a multi-layer image from a loopback
// registry into a ready ext4, with banger (`banger image pull`, cold layer
// cache) and with the standard tool chain (skopeo copy to an OCI layout,
// umoci unpack, mkfs.ext4 -d), in the same run. Reported: seconds per pull
// for each, their ratio, and peak memory (max RSS) of the banger daemon
// and of the largest tool-chain step, for a 50 MB and a 200 MB image: peak
// memory must not grow with the image.
func BenchmarkImagePull(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: the banger daemon and umoci unpack run as root")
	}
	for _, tool := range []string{"skopeo", "umoci", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed (bench/run.sh installs it)", tool)
		}
	}
	bin := bangerBinary(b)
	reg := ocitest.StartRegistry(b)
	for _, size := range []int64{50 << 20, 200 << 20} {
		ref := reg.Ref(fmt.Sprintf("bench/big:%dm", size>>20))
		ocitest.Push(b, ref, ocitest.BigImage(b, size, 5))
		b.Run(fmt.Sprintf("%dMB", size>>20), func(b *testing.B) {
			var banger, chain time.Duration
			var bangerRSS, chainRSS int64
			for i := 0; i < b.N; i++ {
				d, rss := pullWithBanger(b, bin, ref)
				banger += d
				bangerRSS = max(bangerRSS, rss)
				d, rss = pullWithToolchain(b, ref)
				chain += d
				chainRSS = max(chainRSS, rss)
			}
			n := float64(b.N)
			b.ReportMetric(banger.Seconds()/n, "banger-s/op")
			b.ReportMetric(chain.Seconds()/n, "toolchain-s/op")
			b.ReportMetric(chain.Seconds()/banger.Seconds(), "speedup")
			b.ReportMetric(float64(bangerRSS)/(1<<20), "banger-peak-MiB")
			b.ReportMetric(float64(chainRSS)/(1<<20), "toolchain-peak-MiB")
		})
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func bangerBinary(b *testing.B) string {
	if p := os.Getenv("BANGER_TEST_BINARY"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bgbench")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "banger")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/banger")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return builtBin
}

// pullWithBanger starts a fresh daemon (so the layer cache is cold and the
// daemon's peak RSS belongs to this pull), pulls ref, and returns the
// wall time of the pull and the daemon's peak RSS in bytes.
func pullWithBanger(b *testing.B, bin, ref string) (time.Duration, int64) {
	dir, err := os.MkdirTemp("", "bgb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte("group = \"root\"\nimage_headroom_mib = 64\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	args := []string{"--root", filepath.Join(dir, "root"), "--socket", sock, "--config", cfg}
	daemon := exec.Command(bin, append([]string{"daemon"}, args...)...)
	if err := daemon.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		daemon.Process.Signal(syscall.SIGTERM)
		daemon.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command(bin, append([]string{"ls"}, args...)...).Run() != nil {
		if time.Now().After(deadline) {
			b.Fatal("daemon did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	out, err := exec.Command(bin, append([]string{"image", "pull", ref, "--name", "bench"}, args...)...).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("banger image pull: %v\n%s", err, out)
	}
	return d, vmHWM(b, daemon.Process.Pid)
}

// vmHWM is a process's peak resident set size in bytes.
func vmHWM(b *testing.B, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

// pullWithToolchain does the same job with skopeo, umoci and mkfs.ext4,
// returning the wall time and the largest peak RSS of any step.
func pullWithToolchain(b *testing.B, ref string) (time.Duration, int64) {
	dir, err := os.MkdirTemp("", "bgt")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	layoutDir := filepath.Join(dir, "oci")
	bundle := filepath.Join(dir, "bundle")
	img := filepath.Join(dir, "rootfs.ext4")
	var peak int64
	run := func(name string, args ...string) {
		cmd := exec.CommandContext(context.Background(), name, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			peak = max(peak, ru.Maxrss<<10)
		}
	}
	start := time.Now()
	run("skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://"+ref, "oci:"+layoutDir+":latest")
	run("umoci", "unpack", "--image", layoutDir+":latest", bundle)
	// The same sizing banger uses is not available to a shell user; give
	// mkfs the content size plus the same 64 MiB headroom banger got.
	size := treeBytes(b, filepath.Join(bundle, "rootfs"))*11/10 + 64<<20 + 32<<20
	run("mkfs.ext4", "-q", "-F", "-d", filepath.Join(bundle, "rootfs"), img, strconv.FormatInt(size>>10, 10)+"K")
	return time.Since(start), peak
}

func treeBytes(b *testing.B, root string) int64 {
	var n int64
	err := filepath.Walk(root, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += (fi.Size() + 4095) &^ 4095
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
