package qemu

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeQEMUEnv makes the test binary act as QEMU (see fakeQEMU) when Start
// runs it as Config.Binary.
const fakeQEMUEnv = "BANGER_QEMU_TEST_FAKE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeQEMUEnv); mode != "" {
		os.Exit(fakeQEMU(mode, os.Args[1:]))
	}
	code := m.Run()
	removeSharedGuest()
	os.Exit(code)
}

// fakeQEMU is a stand-in for QEMU, driven by mode:
//
//	exit-early  print an error like QEMU's and exit 1
//	no-qmp      never open the QMP socket
//	poweroff    serve QMP; send-key (the guest powering off) or quit exit 0
//	ignore-cad  serve QMP; send-key does nothing, quit exits 0
//	stubborn    serve QMP; neither send-key nor quit nor SIGTERM stops it
//	no-keyboard serve QMP; send-key fails as without a keyboard, quit exits 0
//
// Like QEMU it writes -pidfile and serves QMP on -chardev socket,id=qmp.
func fakeQEMU(mode string, args []string) int {
	fmt.Fprintf(os.Stderr, "fake qemu: mode %s\n", mode)
	var sock string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-pidfile":
			os.WriteFile(args[i+1], []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
		case "-chardev":
			if rest, ok := strings.CutPrefix(args[i+1], "socket,id=qmp,path="); ok {
				sock = optUnescape(rest)
			}
		}
	}
	switch mode {
	case "exit-early":
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: -drive id=disk0,if=none,format=raw,file=/x: Could not open '/x': Permission denied")
		return 1
	case "no-qmp":
		time.Sleep(time.Hour)
		return 0
	case "stubborn":
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	}
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake qemu:", err)
		return 1
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return 1
		}
		serveFakeQMP(mode, conn)
	}
}

// optUnescape reads the first value of a QEMU option string, where ",,"
// is a literal comma and a single comma ends the value.
func optUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				b.WriteByte(',')
				i++
				continue
			}
			break
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func serveFakeQMP(mode string, conn net.Conn) {
	defer conn.Close()
	send := func(s string) { conn.Write([]byte(s + "\r\n")) }
	send(fakeGreeting)
	dec := json.NewDecoder(conn)
	for {
		var r qmpReq
		if err := dec.Decode(&r); err != nil {
			return
		}
		send(`{"event": "FAKE", "timestamp": {"seconds": 0, "microseconds": 0}}`)
		switch r.Execute {
		case "send-key":
			if mode == "no-keyboard" {
				send(`{"error": {"class": "GenericError", "desc": "no keyboard"}, "id": ` + string(r.ID) + `}`)
			} else {
				send(`{"return": {}, "id": ` + string(r.ID) + `}`)
			}
		case "qmp_capabilities", "quit":
			send(`{"return": {}, "id": ` + string(r.ID) + `}`)
		case "query-status":
			send(`{"return": {"status": "running", "running": true}, "id": ` + string(r.ID) + `}`)
		default:
			send(`{"error": {"class": "CommandNotFound", "desc": "The command ` + r.Execute + ` has not been found"}, "id": ` + string(r.ID) + `}`)
		}
		switch {
		case r.Execute == "send-key" && mode == "poweroff",
			r.Execute == "quit" && mode != "stubborn":
			time.Sleep(20 * time.Millisecond)
			os.Exit(0)
		}
	}
}
