"""fraudstream command line: the composition root that fronts scoring, stream, training and api."""
