DROP TABLE figure_counts;
