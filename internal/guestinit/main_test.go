package guestinit

import (
	"os"
	"testing"
)

// TestMain lets the test binary be the guest init, as the banger binary is:
// TestInitAsPID1 boots it as PID 1 of fresh namespaces, and its entrypoint
// runs it again as /.banger/init.
func TestMain(m *testing.M) {
	if dir := os.Getenv(pid1SetupEnv); dir != "" {
		pid1Setup(dir) // never returns
	}
	if IsGuestInit() {
		os.Exit(Main(os.Args))
	}
	os.Exit(m.Run())
}
