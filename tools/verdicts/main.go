// Command fog-verdicts prints what GitOps tools would conclude from one object's status.
//
// It reads one Kubernetes object as JSON on stdin and a Flux Kustomization (YAML) holding
// spec.healthCheckExprs, and prints one JSON line with two verdicts, each a status, a message
// and, when the tool could not decide, an error:
//
//	{"kstatus": {"status": "Current", "message": ""}, "flux": {"status": "InProgress", ...}}
//
// "kstatus" is sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the library kpt, Config Sync
// and Flux's default health checks use; when it fails the status is "Unknown".
//
// "flux" is Flux's own status reader for custom health checks,
// github.com/fluxcd/pkg/runtime/cel.NewStatusReader (RFC 0009), fed the Kustomization's
// healthCheckExprs. It is the code kustomize-controller runs, so the observedGeneration
// pre-check, the inProgress, failed, current order and the mapping of an evaluation error to
// "Unknown" (Flux then keeps waiting until its timeout) are Flux's own, not a copy of them.
//
// Only the tests use it (controller/sandbox/verdicts.py builds it into the cache); it is not
// part of the product. Bad input gets one line on stderr and exit code 2.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	fluxkustomize "github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// verdict is one tool's conclusion about the object.
type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

// kustomization is the part of a Flux Kustomization this command reads.
type kustomization struct {
	Spec struct {
		HealthCheckExprs []fluxkustomize.CustomHealthCheck `json:"healthCheckExprs"`
	} `json:"spec"`
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: fog-verdicts FLUX_KUSTOMIZATION.yaml < object.json")
	}
	checks, err := readChecks(os.Args[1])
	if err != nil {
		fail(err.Error())
	}
	object, err := readObject(os.Stdin)
	if err != nil {
		fail(err.Error())
	}
	flux, err := fluxVerdict(checks, object)
	if err != nil {
		fail(err.Error())
	}
	out, err := json.Marshal(map[string]verdict{"kstatus": kstatusVerdict(object), "flux": flux})
	if err != nil {
		fail(err.Error())
	}
	fmt.Println(string(out))
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "fog-verdicts: "+message)
	os.Exit(2)
}

func readChecks(path string) ([]fluxkustomize.CustomHealthCheck, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var k kustomization
	if err := yaml.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(k.Spec.HealthCheckExprs) == 0 {
		return nil, fmt.Errorf("%s has no spec.healthCheckExprs", path)
	}
	return k.Spec.HealthCheckExprs, nil
}

func readObject(in io.Reader) (*unstructured.Unstructured, error) {
	raw, err := io.ReadAll(in)
	if err != nil {
		return nil, err
	}
	// The apimachinery decoder, as a client reading the API server's JSON: integers stay
	// int64 (encoding/json would make them float64, which kstatus refuses).
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("stdin is not a Kubernetes object as JSON: %v", err)
	}
	return object, nil
}

func kstatusVerdict(object *unstructured.Unstructured) verdict {
	result, err := kstatus.Compute(object)
	if err != nil {
		return verdict{Status: string(kstatus.UnknownStatus), Error: err.Error()}
	}
	return verdict{Status: string(result.Status), Message: result.Message}
}

func fluxVerdict(
	checks []fluxkustomize.CustomHealthCheck, object *unstructured.Unstructured,
) (verdict, error) {
	newReader, err := fluxcel.NewStatusReader(checks)
	if err != nil {
		return verdict{}, err
	}
	// The generic reader needs neither a REST mapper nor a cluster reader for an object
	// already in hand (it only evaluates the expressions on it), so both are nil here.
	reader := newReader(nil)
	if !reader.Supports(object.GroupVersionKind().GroupKind()) {
		return verdict{}, fmt.Errorf("no healthCheckExprs entry for %s", object.GroupVersionKind())
	}
	result, err := reader.ReadStatusForObject(context.Background(), nil, object)
	if err != nil {
		return verdict{}, err
	}
	out := verdict{Status: result.Status.String(), Message: result.Message}
	if result.Error != nil {
		out.Error = result.Error.Error()
	}
	return out, nil
}
