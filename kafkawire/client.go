package kafkawire

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Modes.
const (
	ModeOrdered = "ordered"
	ModeTables  = "tables"
)

// DefaultTopicPrefix is the topic prefix when kafka.topic_prefix is empty.
const DefaultTopicPrefix = "walship"

// OrderedTopic is the topic of ordered mode: "<prefix>.ordered". The suffix
// keeps it apart from the tables-mode topics "<prefix>.<schema>.<table>",
// which always have two more dot-separated parts.
func OrderedTopic(prefix string) string { return prefix + ".ordered" }

// TablesTopic is the topic of table t in tables mode:
// "<prefix>.<schema>.<table>", characters Kafka does not allow in topic
// names ([a-zA-Z0-9._-]) replaced by '_' as Debezium does.
func TablesTopic(prefix, schema, table string) string {
	return prefix + "." + SanitizeTopicPart(schema) + "." + SanitizeTopicPart(table)
}

// SanitizeTopicPart replaces the characters Kafka does not allow in topic
// names ([a-zA-Z0-9._-]) by '_', as Debezium does.
func SanitizeTopicPart(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}

// TLSOptions enables TLS to the brokers.
type TLSOptions struct {
	Enabled            bool
	CAFile             string // PEM; default: the system roots
	CertFile, KeyFile  string // client certificate (both or neither)
	InsecureSkipVerify bool
}

// SASLOptions enables SASL authentication.
type SASLOptions struct {
	Mechanism          string // "" (none) | plain | scram-sha-256 | scram-sha-512
	Username, Password string
}

// ValidateBrokers checks a kafka.brokers list: at least one, each host:port.
func ValidateBrokers(brokers []string) error {
	if len(brokers) == 0 {
		return errors.New("kafka.brokers: required: a list of host:port")
	}
	var errs []error
	for i, b := range brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("kafka.brokers[%d]: %q is not host:port", i, b))
		}
	}
	return errors.Join(errs...)
}

// Validate checks that a client certificate comes with its key.
func (t *TLSOptions) Validate() error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("kafka.tls.cert_file: cert_file and key_file must be given together")
	}
	return nil
}

// Validate checks the mechanism and that it has a username.
func (s *SASLOptions) Validate() error {
	switch s.Mechanism {
	case "":
		return nil
	case "plain", "scram-sha-256", "scram-sha-512":
		if s.Username == "" {
			return errors.New("kafka.sasl.username: required with kafka.sasl.mechanism")
		}
		return nil
	}
	return fmt.Errorf("kafka.sasl.mechanism: %q: want plain, scram-sha-256 or scram-sha-512", s.Mechanism)
}

// ClientOptions returns the kgo options for connecting to brokers with
// tlsCfg and saslCfg: seed brokers, TLS dialer, SASL mechanism; the sink
// and the consumer both connect with it. Certificate files are read now; an error names the
// config key and the file.
func ClientOptions(brokers []string, tlsCfg TLSOptions, saslCfg SASLOptions) ([]kgo.Opt, error) {
	if err := ValidateBrokers(brokers); err != nil {
		return nil, err
	}
	if err := errors.Join(tlsCfg.Validate(), saslCfg.Validate()); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	if tlsCfg.Enabled || tlsCfg.CAFile != "" || tlsCfg.CertFile != "" || tlsCfg.InsecureSkipVerify {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: tlsCfg.InsecureSkipVerify}
		if tlsCfg.CAFile != "" {
			pem, err := os.ReadFile(tlsCfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafka.tls.ca_file: %s: no PEM certificate found", tlsCfg.CAFile)
			}
			tc.RootCAs = pool
		}
		if tlsCfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(tlsCfg.CertFile, tlsCfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.cert_file: %s / %s: %w", tlsCfg.CertFile, tlsCfg.KeyFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch saslCfg.Mechanism {
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: saslCfg.Username, Pass: saslCfg.Password}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: saslCfg.Username, Pass: saslCfg.Password}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: saslCfg.Username, Pass: saslCfg.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}

// IsFatal reports errors that retrying cannot cure: authentication,
// authorization, certificates, invalid topic names, a session timeout the
// broker refuses. It is the one classifier of such errors for the sink and
// the consumer.
func IsFatal(err error) bool {
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	for _, e := range []error{kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState,
		kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed, kerr.GroupAuthorizationFailed,
		kerr.InvalidTopicException, kerr.InvalidSessionTimeout} {
		if errors.Is(err, e) {
			return true
		}
	}
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr)
}
