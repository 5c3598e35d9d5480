package kafkasink

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 to dir and
// returns the server's TLS config and the CA file.
func selfSigned(t *testing.T, dir string) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, caFile
}

// TestTLSAndSASL ships over TLS (verified against a CA file) with
// SCRAM-SHA-512 to a broker that requires both, and reads the records back
// with the same client options; a wrong password stops Run with an error.
func TestTLSAndSASL(t *testing.T) {
	e := newEnv(t)
	srvTLS, caFile := selfSigned(t, e.dir)
	c, err := kafkatest.Start(kfake.TLS(srvTLS), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "walship", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.append(kafkatest.NewWorkload(5), 20)
	want := e.walTxns()
	tlsCfg := kafkawire.TLSOptions{Enabled: true, CAFile: caFile}
	sasl := kafkawire.SASLOptions{Mechanism: "scram-sha-512", Username: "walship", Password: "s3cret"}
	s, err := New(Options{Brokers: []string{c.Addr}, TLS: tlsCfg, SASL: sasl}, e.w, e.ckpts, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitAcked(t, s, want[len(want)-1].CommitLSN, 20*time.Second)
	stop()
	opts, err := kafkawire.ClientOptions([]string{c.Addr}, tlsCfg, sasl)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{kafkawire.OrderedTopic("walship"): {0: kgo.NewOffset().AtStart()}}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < recordCount(want, true) && ctx.Err() == nil {
		recs = append(recs, cl.PollFetches(ctx).Records()...)
	}
	sameTxns(t, rebuild(t, recs), want)

	// A certificate the client does not trust is not retried forever.
	// (kfake answers a wrong password by closing the connection, which
	// looks like any network failure; real brokers return
	// SASL_AUTHENTICATION_FAILED, which kafkawire.IsFatal also stops on.)
	e.ckpts.Reset(context.Background(), CheckpointName)
	s, _ = New(Options{Brokers: []string{c.Addr}, TLS: kafkawire.TLSOptions{Enabled: true}, SASL: sasl}, e.w, e.ckpts, "L1")
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	err = s.Run(rctx)
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &uerr) {
		t.Fatalf("Run against an untrusted certificate = %v, want an x509.UnknownAuthorityError", err)
	}
}
