// Command fakevmm is a TEST-ONLY stand-in for qemu-system-x86_64; see
// package banger/internal/testing/fakevmm. It is never shipped.
package main

import (
	"os"

	"banger/internal/testing/fakevmm"
)

func main() { os.Exit(fakevmm.Main(os.Args)) }
