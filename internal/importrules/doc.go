// Package importrules holds the test that enforces banger's import rules;
// it has no code of its own. See rules.go for the rules and their reasons.
package importrules
