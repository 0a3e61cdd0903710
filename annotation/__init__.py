"""Label Studio as the annotators' desk: the only package that imports label_studio_sdk."""
