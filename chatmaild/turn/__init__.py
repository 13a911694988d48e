"""chatmail-turn: TURN REST credentials for coturn, one line per connection (docs/turn.md)."""
