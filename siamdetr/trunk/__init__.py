"""The backbone stage's ways to train the small ResNet trunk (SwAV, supervised) and the k-NN probe that says
whether its features learned anything."""
