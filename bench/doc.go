// Package bench holds banger's benchmarks: each compares banger with the
// tool chain a user would otherwise use, in the same run, and reports the
// ratio. They are benchmarks, not tests: run them with
//
//	go test -run '^$' -bench . -benchtime 3x ./bench/
//
// and record the figures in bench/README.md. bench/run.sh installs what they
// need.
package bench
