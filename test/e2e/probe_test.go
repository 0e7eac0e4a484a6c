package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// probeSource is a static program the test images carry instead of a
// shell: the guest runs it through exec, and the host side uses it as a
// listener inside the test's namespace.
const probeSource = `package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe echo|exit|resolve|connect|listen|cat ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "echo":
		fmt.Println(strings.Join(os.Args[2:], " "))
	case "exit":
		n, _ := strconv.Atoi(os.Args[2])
		fmt.Fprintln(os.Stderr, "exiting with", n)
		os.Exit(n)
	case "resolve":
		addrs, err := net.LookupHost(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(strings.Join(addrs, " "))
	case "connect":
		c, err := net.DialTimeout("tcp", os.Args[2], 3*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		c.Close()
		fmt.Println("connected")
	case "listen":
		l, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("listening")
		d, _ := time.ParseDuration(os.Args[3])
		go func() { time.Sleep(d); os.Exit(0) }()
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(1)
			}
			c.Close()
		}
	case "write":
		if err := os.WriteFile(os.Args[2], []byte(os.Args[3]), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "read":
		b, err := os.ReadFile(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(b)
	case "statfs":
		var st syscall.Statfs_t
		if err := syscall.Statfs(os.Args[2], &st); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(uint64(st.Blocks) * uint64(st.Bsize))
	case "cat":
		io.Copy(os.Stdout, os.Stdin)
	case "wait-int":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		fmt.Println("waiting")
		select {
		case <-sig:
			fmt.Println("got SIGINT")
			os.Exit(42)
		case <-time.After(60 * time.Second):
			os.Exit(1)
		}
	case "args":
		// The argv after "args", as JSON: newlines and all.
		b, _ := json.Marshal(os.Args[2:])
		fmt.Println(string(b))
	case "env-count":
		// How many variables start with the prefix, and their bytes.
		n, size := 0, 0
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, os.Args[2]) {
				n++
				size += len(kv)
			}
		}
		fmt.Println(n, size)
	case "wait-hup":
		// On SIGHUP, write "HUP" to the file and exit.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		fmt.Println("waiting")
		select {
		case <-sig:
			os.WriteFile(os.Args[2], []byte("HUP"), 0o644)
			os.Exit(0)
		case <-time.After(60 * time.Second):
			os.Exit(1)
		}
	case "ps":
		// How many processes other than this one have the argument in
		// their command line.
		n := 0
		dirs, _ := os.ReadDir("/proc")
		for _, d := range dirs {
			if _, err := strconv.Atoi(d.Name()); err != nil || d.Name() == strconv.Itoa(os.Getpid()) {
				continue
			}
			if b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline"); err == nil && strings.Contains(string(b), os.Args[2]) {
				n++
			}
		}
		fmt.Println(n)
	default:
		fmt.Fprintln(os.Stderr, "unknown probe", os.Args[1])
		os.Exit(2)
	}
}
`

// buildProbe builds the probe, statically, into dir/probe.
func buildProbe(t *testing.T, dir string) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(probeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "probe")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, b)
	}
	return out
}
