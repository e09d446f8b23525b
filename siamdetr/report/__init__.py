"""Reports: the paper's Tables 1-4 and Figures 4 and 6 rebuilt from MLflow runs, paper beside measured."""
