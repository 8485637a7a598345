// Command probe is the test node's test image: an HTTP server on :8080 that
// answers what a test asks about the pod's view of the cluster.
//
//	GET /healthz                 200 "ok" (readiness probe)
//	GET /name                    the pod's host name
//	GET /resolve?name=N          {"addresses": [...]} or 502 {"error": "..."}
//	GET /fetch?url=U             the status and body of GET U, as JSON
//	GET /apiserver               POST a SelfSubjectReview to the API server at
//	                             https://kubernetes.default.svc with the pod's
//	                             ServiceAccount token and CA: status and body
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

const account = "/var/run/secrets/kubernetes.io/serviceaccount/"

func reply(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func failed(w http.ResponseWriter, err error) {
	reply(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
}

func relay(w http.ResponseWriter, client *http.Client, request *http.Request) {
	answer, err := client.Do(request)
	if err != nil {
		failed(w, err)
		return
	}
	defer answer.Body.Close()
	body, err := io.ReadAll(answer.Body)
	if err != nil {
		failed(w, err)
		return
	}
	reply(w, http.StatusOK, map[string]any{"status": answer.StatusCode, "body": string(body)})
}

func main() {
	// A new connection for each fetch, so that each is balanced anew by kube-proxy.
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	http.HandleFunc("/name", func(w http.ResponseWriter, _ *http.Request) {
		name, _ := os.Hostname()
		_, _ = w.Write([]byte(name))
	})
	http.HandleFunc("/resolve", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		addresses, err := net.DefaultResolver.LookupHost(ctx, r.URL.Query().Get("name"))
		if err != nil {
			failed(w, err)
			return
		}
		reply(w, http.StatusOK, map[string]any{"addresses": addresses})
	})
	http.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		request, err := http.NewRequestWithContext(r.Context(), http.MethodGet, r.URL.Query().Get("url"), nil)
		if err != nil {
			failed(w, err)
			return
		}
		relay(w, client, request)
	})
	http.HandleFunc("/apiserver", func(w http.ResponseWriter, r *http.Request) {
		token, err := os.ReadFile(account + "token")
		if err != nil {
			failed(w, err)
			return
		}
		ca, err := os.ReadFile(account + "ca.crt")
		if err != nil {
			failed(w, err)
			return
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(ca)
		secure := &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true},
		}
		review := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
		request, err := http.NewRequestWithContext(r.Context(), http.MethodPost,
			"https://kubernetes.default.svc/apis/authentication.k8s.io/v1/selfsubjectreviews",
			bytes.NewReader(review))
		if err != nil {
			failed(w, err)
			return
		}
		request.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
		request.Header.Set("Content-Type", "application/json")
		relay(w, secure, request)
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}
