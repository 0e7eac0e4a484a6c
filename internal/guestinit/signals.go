package guestinit

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// sshSignals maps SSH signal names (RFC 4254 section 6.10, plus the other
// common Linux signals under their usual names) to signals.
var sshSignals = map[string]unix.Signal{
	"ABRT": unix.SIGABRT, "ALRM": unix.SIGALRM, "FPE": unix.SIGFPE,
	"HUP": unix.SIGHUP, "ILL": unix.SIGILL, "INT": unix.SIGINT,
	"KILL": unix.SIGKILL, "PIPE": unix.SIGPIPE, "QUIT": unix.SIGQUIT,
	"SEGV": unix.SIGSEGV, "TERM": unix.SIGTERM, "USR1": unix.SIGUSR1,
	"USR2": unix.SIGUSR2, "BUS": unix.SIGBUS, "CHLD": unix.SIGCHLD,
	"CONT": unix.SIGCONT, "STOP": unix.SIGSTOP, "TSTP": unix.SIGTSTP,
	"TTIN": unix.SIGTTIN, "TTOU": unix.SIGTTOU, "WINCH": unix.SIGWINCH,
	"XCPU": unix.SIGXCPU, "XFSZ": unix.SIGXFSZ, "SYS": unix.SIGSYS,
	"TRAP": unix.SIGTRAP, "PWR": unix.SIGPWR, "URG": unix.SIGURG,
	"PROF": unix.SIGPROF, "VTALRM": unix.SIGVTALRM, "IO": unix.SIGIO,
}

// parseSSHSignal accepts "TERM" and, leniently, "SIGTERM".
func parseSSHSignal(name string) (unix.Signal, bool) {
	sig, ok := sshSignals[strings.TrimPrefix(name, "SIG")]
	return sig, ok
}

// sshSignalName is the SSH name of sig, "TERM" for SIGTERM.
func sshSignalName(sig unix.Signal) string {
	for name, s := range sshSignals {
		if s == sig {
			return name
		}
	}
	return fmt.Sprintf("SIG%d@banger", int(sig))
}

// describeStatus renders a wait status for logs.
func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by SIG" + sshSignalName(ws.Signal())
	default:
		return fmt.Sprintf("wait status %#x", uint32(ws))
	}
}
