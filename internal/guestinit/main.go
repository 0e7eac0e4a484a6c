package guestinit

import (
	"fmt"
	"os"
	"path/filepath"
)

// IsGuestInit reports whether this process is the guest init: started as
// /.banger/init (as PID 1 it boots the guest; otherwise Main runs the
// built-ins as commands).
//
// Only argv[0] decides, never being PID 1 alone: banger run as PID 1 of a
// container (the daemon, say) must not mistake itself for a guest's init.
// The kernel (init=/.banger/init) and the initrd's switch_root both start
// the init with argv[0] = /.banger/init.
func IsGuestInit() bool {
	return isInitPath(os.Args[0])
}

func isInitPath(arg0 string) bool {
	return filepath.Base(arg0) == "init" && filepath.Dir(arg0) == "/.banger"
}

// Main runs the guest init with the process's args and returns an exit
// status. As PID 1 it boots the guest and never returns (it powers the
// VM off instead). Otherwise it runs a built-in as a command:
// "/.banger/init untar DEST", "tar SRC PATH...", "poweroff".
func Main(args []string) int {
	if os.Getpid() == 1 {
		runInit()
	}
	if len(args) < 2 {
		fmt.Fprintf(os.Stderr, "%snot PID 1; usage: %s untar DEST | tar SRC PATH... | poweroff\n", logPrefix, InitPath)
		return 2
	}
	return runTool(args[1:])
}
