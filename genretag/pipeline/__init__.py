"""From a path to a TrackResult: sub-track placement, decoding in workers, the network, votes, the result cache, output."""
