//! Parse error logs (stack traces, compiler errors, test-runner output) into typed reports.
