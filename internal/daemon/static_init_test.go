package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/errdefs"
)

func TestStaticInitCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two small programs")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	// net makes cgo builds link libc dynamically.
	if err := os.WriteFile(src, []byte("package main\nimport \"net\"\nfunc main() { net.LookupHost(\"x\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(out string, cgo string) string {
		p := filepath.Join(dir, out)
		cmd := exec.Command("go", "build", "-o", p, src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOFLAGS=")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build (CGO_ENABLED=%s): %v\n%s", cgo, err, b)
		}
		return p
	}
	if err := checkStaticInit(build("static", "0")); err != nil {
		t.Errorf("a CGO_ENABLED=0 binary was refused: %v", err)
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Log("no gcc: the dynamically linked case is not checked (cgo needs a C compiler)")
	} else {
		err := checkStaticInit(build("dynamic", "1"))
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("a dynamically linked binary: %v, want a failed precondition saying to build with CGO_ENABLED=0", err)
		}
	}
	notELF := filepath.Join(dir, "script")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if err := checkStaticInit(notELF); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("a script: %v, want a failed precondition", err)
	}
}
