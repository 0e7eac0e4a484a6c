package e2e

import (
	"os"
	"testing"

	"banger/internal/testing/fakevmm"
)

// TestMain removes the binaries built for the tests once they have run.
func TestMain(m *testing.M) {
	code := m.Run()
	fakevmm.Remove()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
