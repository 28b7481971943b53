//go:build tools

// Package tools pins kube-score's command, built with
// `go build github.com/zegl/kube-score/cmd/kube-score` in this module.
package tools

import _ "github.com/zegl/kube-score/cmd/kube-score"
