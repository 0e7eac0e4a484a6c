// Command jailershim is a TEST-ONLY stand-in for Firecracker's jailer; see
// package banger/internal/testing/jailershim. It is never shipped.
package main

import (
	"os"

	"banger/internal/testing/jailershim"
)

func main() { os.Exit(jailershim.Main(os.Args)) }
