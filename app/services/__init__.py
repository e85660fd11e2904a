"""What the routes call: each function takes a session and plain values, and raises Problem."""
