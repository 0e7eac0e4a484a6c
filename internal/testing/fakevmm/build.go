package fakevmm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/testing/guestboot"
	"banger/internal/testing/guestkernel"
)

// binDirPrefix names the per-process directories Build puts the binary
// in: fakevmm-bin-PID-random under os.TempDir().
const binDirPrefix = "fakevmm-bin-"

var built struct {
	mu   sync.Mutex
	dir  string // removed by Remove
	path string
}

// Build returns the path of the fakevmm binary (cmd/fakevmm), building it
// with CGO_ENABLED=0 on first use in this process into a temp dir; later
// calls return the same file. It needs the go command and skips the test in
// -short mode. Call Remove from TestMain after m.Run to delete the dir; a
// dir a killed test binary left behind is deleted by the next Build.
func Build(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: building the fakevmm binary in -short mode")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping: go is not installed: the test builds the fakevmm binary")
	}
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.path != "" {
		return built.path
	}
	sweepStale()
	dir, err := os.MkdirTemp("", binDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fakevmm")
	start := time.Now()
	guestboot.GoBuild(t, guestkernel.RepoRoot(t), []string{"CGO_ENABLED=0"}, "-o", path, "./internal/testing/fakevmm/cmd/fakevmm")
	t.Logf("fakevmm built in %v", time.Since(start).Round(time.Millisecond))
	built.dir, built.path = dir, path
	return path
}

// Remove deletes the directory Build put the binary in. Processes still
// running it keep running.
func Remove() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
		built.dir, built.path = "", ""
	}
}

// sweepStale removes the binary dirs of test processes that are gone.
func sweepStale() {
	ents, _ := os.ReadDir(os.TempDir())
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), binDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
		}
	}
}
